"""Allocation concealment (issue 14, finding 1): the two attacks that rebuilt the allocation lists from what blinded
roles could read now fail — run as the blinded statistician (exports, views) and as the administrator (the whole
database, a backup, the sealed list files he imports) — and the guides' weak seeds are refused.

Attack 1 (checksum enumeration): collect every 64-hex digest the attacker can read and enumerate every list a
permuted-block design could have produced (balanced blocks of 2, 4 or 6, the platform's sizes, assumed known),
hashing each the way revision 0002 stored it (content checksum over site, stratum, seq, block, size, arm; SHA-256
of the list file). Attack 2 (seed dictionary): hash candidate seeds (the guides' own, words, numbers, site/stratum
patterns) and look for them, and look for the seed itself. Each attack is first shown to work on the artefacts of
revision 0002 (positive control), so a pass is not the attack's failure to run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from typer.testing import CliRunner

from conftest_pg import *  # noqa: F403 - fixtures pg_server, pg_url, sqlite_template, store_url
from immunoguide.cli._trial import trial_app
from immunoguide.trial import (
    TrialStore,
    backup_store,
    consort,
    export_trial,
    generate_allocation_list,
    import_allocation_list,
    kits_view,
    patient_view,
    randomize,
)
from trial_helpers import ADMIN, COORD, DSMB, STATISTICIAN, enrol, h

ARMS = ("mals_anakinra", "mals_placebo")
BLOCK_SIZES = (2, 4, 6)
HEX64 = re.compile(r"[0-9a-f]{64}")
DICTIONARY = ["s3cret", "pharm-demo", "secret", "password", "seed", "trial", "immunosep", "x", "1", "42", "2025",
              *(str(i) for i in range(0, 2000)),
              *(f"{a}-{b}-{c}" for a in ("7", "2025", "seed") for b in ("ATH", "MIL") for c in ("MALS", "immunoparalysis"))]


def _arrangements(n: int) -> list[tuple[tuple[int, int, str], ...]]:
    """Every list of n slots made of balanced blocks of 2, 4 or 6: ((block, size, arm) per slot)."""
    out: list[tuple[tuple[int, int, str], ...]] = []

    def compositions(rest: int) -> list[list[int]]:
        if rest == 0:
            return [[]]
        return [[b, *c] for b in BLOCK_SIZES if b <= rest for c in compositions(rest - b)]

    for comp in compositions(n):
        per_block = []
        for size in comp:
            per_block.append(sorted({p for p in itertools.permutations([ARMS[0]] * (size // 2) + [ARMS[1]] * (size // 2))}))
        for choice in itertools.product(*per_block):
            slots = []
            for bi, (size, arms) in enumerate(zip(comp, choice, strict=True), start=1):
                slots.extend((bi, size, a) for a in arms)
            out.append(tuple(slots))
    return out


def _old_digests(name: str, site: str, stratum: str, slots: tuple[tuple[int, int, str], ...]) -> tuple[str, str]:
    """The content checksum and the list file's SHA-256 as revision 0002 computed and stored them."""
    content = hashlib.sha256()
    lines = ["list,site,stratum,seq,block,block_size,arm"]
    for seq, (block, size, arm) in enumerate(slots, start=1):
        content.update(f"{site},{stratum},{seq},{block},{size},{arm}\n".encode())
        lines.append(f"{name},{site},{stratum},{seq},{block},{size},{arm}")
    return content.hexdigest(), hashlib.sha256(("\n".join(lines) + "\n").encode()).hexdigest()


def checksum_attack(material: str, n_slots: int, name: str = "ATH-MALS", site: str = "ATH",
                    stratum: str = "MALS") -> list[tuple[str, ...]]:
    """The arm sequences whose revision-0002 checksums occur in ``material`` (empty when the attack fails)."""
    digests = set(HEX64.findall(material))
    found = []
    for slots in _arrangements(n_slots):
        if digests & set(_old_digests(name, site, stratum, slots)):
            found.append(tuple(a for _, _, a in slots))
    return found


def seed_attack(material: str) -> list[str]:
    """Dictionary seeds whose SHA-256 (of the text, or of its hex bytes) or whose text occurs in ``material``."""
    digests = set(HEX64.findall(material))
    hits = []
    for seed in DICTIONARY:
        cands = {hashlib.sha256(seed.encode()).hexdigest()}
        if re.fullmatch(r"(?:[0-9a-f]{2})+", seed):
            cands.add(hashlib.sha256(bytes.fromhex(seed)).hexdigest())
        if digests & cands:
            hits.append(seed)
    return hits


@pytest.fixture(scope="module")
def old_style_list() -> dict[str, object]:
    """A revision-0002 list (plaintext arms, content checksum, seed hash), made the way 0002 made it, for the controls."""
    seed = "s3cret"
    slots = _arrangements(8)[37]
    content, file_sha = _old_digests("ATH-MALS", "ATH", "MALS", slots)
    meta = {"content_sha256": content, "seed_sha256": hashlib.sha256(seed.encode()).hexdigest(), "n_slots": 8}
    return {"arms": tuple(a for _, _, a in slots), "material": json.dumps(meta) + file_sha, "seed": seed}


def test_positive_controls_the_attacks_break_a_revision_0002_list(old_style_list: dict[str, object]) -> None:
    """On what revision 0002 let a blinded statistician read, the checksum attack recovers the list and the
    dictionary finds the seed (as the issue reported), so the attack code works."""
    found = checksum_attack(str(old_style_list["material"]), 8)
    assert found == [old_style_list["arms"]]
    assert seed_attack(str(old_style_list["material"])) == ["s3cret"]


@pytest.fixture
def world(store_url: str, tmp_path: Path) -> dict[str, object]:
    """A trial with the guides' list sizes (8 and 4 slots), generated the default way, three patients randomised."""
    st = TrialStore(store_url)
    lists = tmp_path / "lists"
    files = [generate_allocation_list("ATH", "MALS", 8, out_dir=lists),
             generate_allocation_list("ATH", "immunoparalysis", 4, out_dir=lists)]
    with st.session() as s:
        for f in files:
            import_allocation_list(s, f.csv, actor=ADMIN, now=h(0))
    for code in ("P1", "P2", "P3"):
        enrol(st, code)
        with st.session() as s:
            randomize(s, code, actor=COORD, now=h(9))
    yield {"store": st, "files": files, "dir": tmp_path}
    st.dispose()


def _statistician_material(st: TrialStore, out: Path) -> str:
    """Everything the blinded statistician can read: the export (every file) and the role-aware views."""
    with st.session() as s:
        export_trial(s, out, actor=STATISTICIAN, now=h(20))
        views = [patient_view(s, c, actor=STATISTICIAN) for c in ("P1", "P2", "P3")]
        views += [kits_view(s, c, actor=STATISTICIAN) for c in ("P1", "P2", "P3")]
        views.append(consort(s, actor=STATISTICIAN))
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in sorted(out.iterdir())) + json.dumps(views)


def _administrator_material(st: TrialStore, files: list, out: Path) -> str:
    """Everything the administrator can read: every column of every table (audit trail included), a backup, and
    the sealed list files he imported."""
    parts = []
    with st.engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f"SELECT * FROM {table}")).mappings():
                parts.append(json.dumps({k: str(v) for k, v in row.items()}))
    backup = out / "backup.zip"
    backup_store(st, backup, actor=ADMIN, now=h(21))
    with zipfile.ZipFile(backup) as zf:
        parts.extend(zf.read(n).decode() for n in zf.namelist())
    for f in files:
        parts += [f.csv.read_text(), f.meta.read_text(), f.sha256.read_text()]
    return "\n".join(parts)


@pytest.mark.parametrize("who", ["statistician", "administrator"])
def test_the_checksum_and_seed_attacks_fail_for_blinded_roles(world: dict[str, object], who: str) -> None:
    """Neither attack recovers a list or a seed from what the role can read; the slots' arms, the kits' contents,
    block structure and the seed appear nowhere in it; the DSMB (unblinded, with the key) still reads the arms."""
    st: TrialStore = world["store"]  # type: ignore[assignment]
    files = world["files"]
    out = Path(str(world["dir"])) / who
    out.mkdir()
    material = (_statistician_material(st, out) if who == "statistician"
                else _administrator_material(st, files, out))  # type: ignore[arg-type]
    assert checksum_attack(material, files[0].n_slots) == []  # type: ignore[index]
    assert checksum_attack(material, files[1].n_slots, "ATH-immunoparalysis", "ATH", "immunoparalysis") == []  # type: ignore[index]
    assert seed_attack(material) == []
    for f in files:  # type: ignore[attr-defined]
        master = json.loads(f.master_meta.read_text())
        assert master["seed"] not in material
        assert hashlib.sha256(bytes.fromhex(master["seed"])).hexdigest() not in material
        assert hashlib.sha256(master["seed"].encode()).hexdigest() not in material
    with st.engine.connect() as conn:
        slot_rows = [json.dumps(dict(r)) for r in conn.execute(text(
            "SELECT arm, block, block_size FROM allocation_slots UNION ALL SELECT regimen, NULL, NULL FROM kits")).mappings()]
    assert all(json.loads(r) == {"arm": None, "block": None, "block_size": None} for r in slot_rows)
    codes = ("mals_anakinra", "mals_placebo", "sii_ifng", "sii_placebo", "anakinra_iv", "placebo_iv", "ifng_sc",
             "placebo_sc")
    flat = material.replace(" ", "")
    for code in codes:
        assert f'"arm":"{code}"' not in flat and f'"regimen":"{code}"' not in flat
    if who == "statistician":
        for table in ("allocation_slots", "kits"):  # (allocation_lists names the arms of the ratio: protocol)
            assert not any(c in (out / f"{table}.csv").read_text() for c in codes), table
    with st.session() as s:  # the unblinded reviewer, whose process holds the trial key, still sees every arm
        assert patient_view(s, "P1", actor=DSMB)["randomisation"]["arm"] in ARMS


@pytest.mark.parametrize(("seed", "n"), [("s3cret", "8"), ("pharm-demo", "4"), ("x", "8")])
def test_the_guides_former_seeds_are_refused(tmp_path: Path, seed: str, n: str) -> None:
    """`allocation generate --seed s3cret -n 8` and `--seed pharm-demo -n 4` (the guides' commands before issue 14)
    and `--seed x` exit 2 with IG-E109 and write no file; without --seed a 256-bit seed is drawn."""
    res = CliRunner().invoke(trial_app, ["allocation", "generate", "--site", "ATH", "--stratum", "MALS", "-n", n,
                                         "--seed", seed, "--out", str(tmp_path)])
    assert res.exit_code == 2 and json.loads(res.stderr)["error"]["code"] == "IG-E109"
    assert not list(tmp_path.rglob("*.csv"))
    res = CliRunner().invoke(trial_app, ["allocation", "generate", "--site", "ATH", "--stratum", "MALS", "-n", n,
                                         "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert json.loads(Path(json.loads(res.stdout)["master_meta"]).read_text())["seed_source"] == "csprng"
