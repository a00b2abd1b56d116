"""Every command and code example of the user guides (docs/guides/*.md) runs, in document order, and succeeds."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

GUIDES = sorted((Path(__file__).resolve().parents[1] / "docs" / "guides").glob("*.md"))
BLOCK = re.compile(r"```(console|python)\n(.*?)```", re.S)


def steps(guide: Path) -> list[tuple[str, str]]:
    out = []
    for kind, body in BLOCK.findall(guide.read_text()):
        if kind == "console":
            # One block is one shell session: `export` lines carry over to the block's later commands.
            cmds = [line[2:] for line in body.splitlines() if line.startswith("$ ")]
            # `$ ! cmd` documents a refusal. `set -e` ignores a negated command, so make it fail the block when
            # the command succeeds.
            cmds = [f"if {c[2:]}; then echo {shlex.quote('expected a refusal: ' + c[2:])} >&2; exit 1; fi"
                    if c.startswith("! ") else c for c in cmds]
            out.append(("console", "set -euo pipefail\n" + "\n".join(cmds)))
        else:
            out.append(("python", body))
    return out


@pytest.mark.parametrize("guide", GUIDES, ids=[g.stem for g in GUIDES])
def test_every_example_of_the_guide_runs(guide: Path, tmp_path: Path, mimic3_demo_dir: Path) -> None:
    """Each `$ command` exits 0 and each Python block executes, in a scratch folder, in the order written."""
    todo = steps(guide)
    assert todo, f"{guide.name} has no examples"
    repo = Path(__file__).resolve().parents[1]
    # The guides' commands set up their own trial key, store and logins: nothing of the test session leaks in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMMUNOGUIDE_")}
    env.update({"MIMIC3_DEMO": str(mimic3_demo_dir), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    # Commands may name repository files (protocol paths): give the scratch folder a view of src/.
    (tmp_path / "src").symlink_to(repo / "src")
    for kind, code in todo:
        if kind == "console":
            p = subprocess.run(["bash", "-o", "pipefail", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
            assert p.returncode == 0, f"{guide.name}: `{code}` exited {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
        else:
            # In-process, but without the test session's IMMUNOGUIDE_* settings (its trial key above all): a block
            # must open what it uses itself, as a reader's script would; anything it sets is dropped afterwards.
            saved = {k: v for k, v in os.environ.items() if k.startswith("IMMUNOGUIDE_")}
            for k in saved:
                del os.environ[k]
            cwd = os.getcwd()
            os.chdir(tmp_path)
            try:
                exec(compile(code, f"{guide.name}:python", "exec"), {"__name__": "__guide__"})
            finally:
                os.chdir(cwd)
                for k in [k for k in os.environ if k.startswith("IMMUNOGUIDE_")]:
                    del os.environ[k]
                os.environ.update(saved)
