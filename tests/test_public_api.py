"""The public Python API: every name in ``immunoguide.__all__`` resolves, lazily, and is documented in the README.

``import immunoguide`` must stay cheap (a rule or a protocol look-up must not pull in the cohort engine, the trial
store or the statistics), so the heavy libraries are checked in a fresh interpreter.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import immunoguide

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("pandas", "ibis", "duckdb", "scipy", "sqlalchemy", "pyarrow", "numpy", "fastapi")


def test_all_lists_exactly_the_lazily_imported_names() -> None:
    """``__all__`` and the name → module table of the lazy import are the same set, with no duplicates."""
    assert len(immunoguide.__all__) == len(set(immunoguide.__all__))
    assert set(immunoguide.__all__) == set(immunoguide._API)


@pytest.mark.parametrize("name", immunoguide.__all__)
def test_every_public_name_resolves_to_its_module(name: str) -> None:
    """Each public name is the object its module defines (not a copy, not a stub)."""
    from importlib import import_module

    obj = getattr(immunoguide, name)
    assert obj is getattr(import_module(immunoguide._API[name]), name)
    assert name in dir(immunoguide)


def test_an_unknown_name_is_an_attribute_error() -> None:
    """A misspelt name fails like any missing attribute (so ``hasattr`` and ``from … import`` behave)."""
    with pytest.raises(AttributeError, match="score_sofa3"):
        immunoguide.score_sofa3  # noqa: B018
    assert not hasattr(immunoguide, "score_sofa3")


def test_import_immunoguide_loads_no_heavy_library() -> None:
    """A fresh ``import immunoguide`` imports none of pandas, Ibis, DuckDB, SciPy, SQLAlchemy (or Arrow, NumPy)."""
    code = (
        "import json, sys; before = set(sys.modules); import immunoguide; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    loaded = json.loads(out.stdout)
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []
    assert [m for m in loaded if m.startswith("immunoguide.")] == []


def test_readme_documents_every_public_name() -> None:
    """The README's "Python API" table names every public name, and no name that is not public."""
    readme = (ROOT / "README.md").read_text("utf-8")
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    documented = {n for row in rows for n in re.findall(r"`(\w+)`", row.split(" | ")[0])}
    assert documented == set(immunoguide.__all__)


def test_readme_python_example_runs() -> None:
    """The README's example screens a patient with only age and ANC: undetermined, with the criteria to collect."""
    readme = (ROOT / "README.md").read_text("utf-8")
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    scope: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), scope)
    result = scope["result"]
    assert result.eligible is None  # type: ignore[attr-defined]
    assert "I5" in result.undetermined and "I1" not in result.undetermined  # type: ignore[attr-defined]
