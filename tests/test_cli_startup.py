"""The ``immunoguide`` command starts without the heavy libraries: each command imports what it uses when it runs.

Every case runs in a fresh interpreter (``sys.modules`` of this test process already holds everything) and reports
which of the heavy modules got imported. How long the start takes is measured in ``benchmarks/bench_user.py``,
never here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import immunoguide

#: Libraries that cost 0.1–1 s each to import and that no command needs just to start or to print its help.
HEAVY = (
    "pandas", "numpy", "pyarrow", "scipy", "matplotlib", "ibis", "duckdb", "sqlalchemy", "fastapi", "uvicorn",
    "weasyprint", "statsmodels", "lifelines", "altair", "jinja2", "sqlglot",
)

_PROBE = """
import json, sys
argv, heavy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.argv = ["immunoguide", *argv]
code = 0
try:
    import immunoguide.cli
    if argv:
        immunoguide.cli.main()
except SystemExit as exc:
    code = exc.code or 0
sys.stdout.write("\\nLOADED " + json.dumps({"code": code, "heavy": [m for m in heavy if m in sys.modules]}) + "\\n")
sys.stdout.flush()
"""


def _loaded(argv: list[str], stdin: str = "", heavy: tuple[str, ...] = HEAVY, env: dict | None = None) -> dict:
    src = str(Path(immunoguide.__file__).resolve().parents[1])
    env = {**os.environ, "IMMUNOGUIDE_HELP_CACHE": "off", **(env or {}),  # the help rendered, not read back
           "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(argv), json.dumps(heavy)],
        input=stdin, capture_output=True, text=True, env=env, check=False, timeout=120,
    )
    line = next((x for x in reversed(p.stdout.splitlines()) if x.startswith("LOADED ")), None)
    assert line is not None, p.stderr[-2000:]
    return json.loads(line.removeprefix("LOADED "))


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["cohort", "run", "--help"],
        ["synth", "mimic4", "--help"],
        ["design", "power", "--help"],
        ["protocol", "show", "--help"],
        ["trial", "--help"],
        ["demo", "--help"],
    ],
    ids=lambda a: " ".join(a) or "import",
)
def test_importing_the_cli_and_printing_help_loads_no_heavy_library(argv: list[str]) -> None:
    """``import immunoguide.cli`` and each ``--help`` leave pandas, scipy, ibis, DuckDB, SQLAlchemy … unimported."""
    res = _loaded(argv)
    assert res["code"] == 0
    assert res["heavy"] == []


def test_classifying_one_line_loads_no_dataframe_or_statistics_library() -> None:
    """``classify`` of one JSON line needs the protocol and the rules only: no pandas, numpy, scipy or DuckDB."""
    res = _loaded(["classify"], stdin='{"ferritin": 6000, "ferritin_unit": "ng/mL"}\n')
    assert res["code"] == 0
    assert res["heavy"] == []


def test_scoring_one_line_loads_no_dataframe_or_statistics_library() -> None:
    """``score sofa`` of one JSON line needs the criteria and the rules only: no pandas, numpy, scipy or DuckDB."""
    res = _loaded(["score", "sofa"], stdin='{"platelets_10e3_per_ul": 90, "gcs": 14}\n')
    assert res["code"] == 0
    assert res["heavy"] == []


def test_help_text_names_every_synthetic_endotype_prior() -> None:
    """The ``synth mimic4 --endotype-prior`` help lists exactly the generator's priors (kept apart to start fast)."""
    from immunoguide.cli._synth import ENDOTYPE_PRIOR_NAMES, LAYOUT_NAMES, MIMIC4_VERSION_NAMES
    from immunoguide.synth import ENDOTYPE_PRIORS, LAYOUTS, MIMIC4_VERSIONS

    assert ENDOTYPE_PRIOR_NAMES == tuple(ENDOTYPE_PRIORS)
    assert (LAYOUT_NAMES, MIMIC4_VERSION_NAMES) == (tuple(LAYOUTS), tuple(MIMIC4_VERSIONS))


def test_the_root_help_table_says_what_each_command_says() -> None:
    """The lazy root lists every command from ``COMMANDS`` (nothing imported); each entry names the command's
    module and object and repeats the first paragraph of the help the command itself carries."""
    import typer
    import typer.main

    from immunoguide.cli import COMMANDS, app, load_command

    root = typer.main.get_command(app)
    ctx = root.make_context("immunoguide", ["classify"])
    for name, (_, _, short) in COMMANDS.items():
        obj = load_command(name)
        assert isinstance(obj, typer.Typer) or callable(obj), name
        cmd = root.get_command(ctx, name)
        assert cmd is not None and cmd.name == name
        assert (cmd.short_help or cmd.help or "").split("\n\n")[0] == short, name


def test_version_prints_the_package_version() -> None:
    """``immunoguide --version`` prints ``immunoguide <version>`` and exits 0 without running a command."""
    from typer.testing import CliRunner

    from immunoguide.cli import app

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0
    assert res.stdout.strip() == f"immunoguide {immunoguide.__version__}"
    assert _loaded(["--version"], heavy=(*HEAVY, "rich", "pydantic")) == {"code": 0, "heavy": []}


def test_importing_the_cli_loads_neither_rich_nor_pydantic() -> None:
    """The root group registers its commands by name: importing it builds no command, renders nothing."""
    assert _loaded([], heavy=(*HEAVY, "rich", "pydantic", "immunoguide.cli._trial")) == {"code": 0, "heavy": []}


def test_a_mistyped_command_is_a_usage_error_that_names_the_closest_command() -> None:
    """A command that is not loaded yet is still suggested ("Did you mean 'classify'?"); exit code 2."""
    from typer.testing import CliRunner

    from immunoguide.cli import app

    res = CliRunner().invoke(app, ["clasify"])
    assert res.exit_code == 2
    assert "Did you mean 'classify'?" in res.output


def test_the_root_help_is_rendered_once_then_printed_from_the_cache(tmp_path: Path) -> None:
    """``immunoguide --help`` renders through typer and rich once per terminal setting and code, keeps the text, and
    later prints exactly that text without importing typer, click or rich; with the cache off it renders again."""
    src = str(Path(immunoguide.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src, "IMMUNOGUIDE_CACHE_DIR": str(tmp_path), "COLUMNS": "100",
           "IMMUNOGUIDE_HELP_CACHE": "on"}
    code = "import sys; sys.argv = ['immunoguide', '--help']; from immunoguide.cli import main; main()"

    def run(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, **extra},
                              check=False, timeout=120)

    first, second, uncached = run(), run(), run(IMMUNOGUIDE_HELP_CACHE="off")
    assert first.returncode == second.returncode == uncached.returncode == 0
    assert "classify" in first.stdout and "report-dsmb" in first.stdout
    assert second.stdout == first.stdout == uncached.stdout
    assert len(list((tmp_path / "help").glob("*.txt"))) == 1
    narrow = run(COLUMNS="60")  # another width is another entry, rendered for it
    assert narrow.returncode == 0 and narrow.stdout != first.stdout
    assert len(list((tmp_path / "help").glob("*.txt"))) == 2
    cached = _loaded(["--help"], heavy=(*HEAVY, "typer", "click", "rich"),
                     env={"IMMUNOGUIDE_CACHE_DIR": str(tmp_path), "COLUMNS": "100", "IMMUNOGUIDE_HELP_CACHE": "on"})
    assert cached == {"code": 0, "heavy": []}
