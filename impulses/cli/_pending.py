"""Library calls the CLI is written against (see docs of each), implemented here until their real homes exist.

Every function and class keeps the name and signature it will have in the library module named in
its docstring; the CLI imports them from this one module only, so switching to the real modules is
a change of import lines. The code is what the commands used to run inline.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from impulses.encoders.pretrain import PretrainResult
from impulses.errors import ImpulsesError, ParameterError


@dataclass
class MainPretrainResult(PretrainResult):
    """``impulses.encoders.pretrain.PretrainResult`` with ``is_main`` (False on torchrun ranks != 0)."""

    is_main: bool = True


def run_pretraining(
    out: str | os.PathLike[str],
    *,
    data: str | None = None,
    data_root: str | os.PathLike[str] | None = None,
    download: bool = False,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    **options: Any,
) -> MainPretrainResult:
    """``impulses.encoders.pretrain.run_pretraining``: pretrain (or resume) into ``out``.

    ``options`` are PretrainConfig fields; None or absent means the default, or the checkpoint's
    value when resuming.
    """
    from impulses.data.sources import open_source
    from impulses.encoders.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from impulses.encoders.distributed import env_context
    from impulses.encoders.pretrain import PretrainConfig, config_fields, pretrain

    out = Path(out)
    known = config_fields()
    for name in options:
        if name not in known:
            raise ParameterError(name, f"is not a pretraining option (known: {', '.join(known)})")
    checkpoint = out / CHECKPOINT_NAME
    if resume and not checkpoint.exists():
        raise ImpulsesError(f"{checkpoint}: no checkpoint to resume (run once without resume first)")
    if options.get("weights") is not None:
        options["weights"] = str(options["weights"])
    given = {k: v for k, v in {"data": data, **options}.items() if v is not None}
    base = load_checkpoint(checkpoint)["config"] if resume else asdict(PretrainConfig())
    merged = {**base, **given}
    config = PretrainConfig(**{k: merged[k] for k in known if k in merged})
    if not config.data:
        raise ParameterError("data", "is required, e.g. 'digits'")
    source = open_source(config.data, data_root=data_root, download=download)
    config.data = getattr(source, "spec", config.data)
    main = env_context().is_main
    result = pretrain(source, config, out, resume=resume, progress=progress, log=log)
    return MainPretrainResult(result.checkpoint, result.history, is_main=main)
