"""The README's "In Python" example runs as written (in a temporary folder)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_example() -> str:
    """The first ```python block after the "## In Python" heading."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## In Python") :]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match, "README has no python block under '## In Python'"
    return match.group(1)


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(python_example(), str(README), "exec"), namespace)
    sweep = namespace["sweep"]
    assert sweep.rows.height == 3 * (3 + 3) * 2  # label sets x (imbnnpu b·π + nnpu b·π) x seeds
    assert (tmp_path / "runs/py/heads/heads.pt").exists()
    scores = namespace["scores"]
    assert scores.height == 1797 and scores.width == 1 + sweep.rows.height
    assert 0.5 < namespace["clf"].score(namespace["train"].X, namespace["train"].S[:, 0]) <= 1.0
