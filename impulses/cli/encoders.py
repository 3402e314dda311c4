"""``impulses encoders``: the encoder names ``embed`` and ``pretrain`` accept, ours and timm's."""

from __future__ import annotations

from typing import Annotated

import typer

from impulses.cli._options import JsonOption
from impulses.cli._output import print_json, print_table, say


def encoders_command(
    pattern: Annotated[
        str, typer.Argument(help="Shell-style wildcards over names, e.g. 'resnet*' or 'vit_*dinov2*'.")
    ] = "*",
    pretrained_only: Annotated[
        bool, typer.Option("--pretrained-only", help="Only encoders with published weights.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """List the encoders --encoder accepts (ours, then timm's) and which have published weights.

    A timm encoder embeds with its published weights (--pretrained, names in the weights column) or,
    asked for explicitly, its random initial weights (--random-init). Reads timm's registry: no network.

    Examples:

        impulses encoders

        impulses encoders 'resnet*' --pretrained-only

        impulses encoders 'vit_small*dinov2*' --json
    """
    from impulses.encoders.registry import describe_encoders

    encoders = [e for e in describe_encoders(pattern) if e["pretrained"] or not pretrained_only]
    if as_json:
        print_json(encoders)
        return
    if not encoders:
        say(f"no encoder matches {pattern!r}" + (" with published weights" if pretrained_only else ""))
        return
    rows = [
        (e["name"], e["source"], "yes" if e["pretrained"] else "no", _weights(e["weights"])) for e in encoders
    ]
    print_table(
        f"{len(encoders)} encoder(s) matching {pattern!r}",
        rows,
        ("name", "source", "published weights", "weights"),
    )


def _weights(tags: list[str], shown: int = 1) -> str:
    """The first tagged weight name, and how many more there are."""
    more = f" (+{len(tags) - shown} more)" if len(tags) > shown else ""
    return ", ".join(tags[:shown]) + more
