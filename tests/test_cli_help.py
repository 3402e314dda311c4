"""Command help: prose paragraphs are reflowed by the terminal, examples keep their lines."""

from __future__ import annotations

from impulses.cli import _unwrap, app


def test_unwrap_joins_prose_lines_and_keeps_indented_examples() -> None:
    doc = """Summary line.

    First paragraph
    continues here.

    Examples:

        impulses demo
        impulses demo --json
    """
    assert (
        _unwrap(doc)
        == "Summary line.\n\nFirst paragraph continues here.\n\nExamples:\n\n    impulses demo\n    impulses demo --json"
    )


def test_every_command_has_unwrapped_help() -> None:
    for command in app.registered_commands:
        assert command.help, command.name
        prose = [p for p in command.help.split("\n\n") if not p.startswith(" ")]
        assert all("\n" not in p for p in prose), command.name
