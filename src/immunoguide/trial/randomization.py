"""Randomisation from pre-generated, **sealed** allocation lists: generate, import, verify, allocate.

No random call decides an allocation at the bedside. The list statistician (unblinded, holding the trial key)
generates one list per site and stratum (:func:`generate_allocation_list`: permuted blocks of randomly chosen
size, each block balanced to the protocol's ratio — ImmunoSep 1:1 — from a 256-bit seed drawn from the operating
system's cryptographic source; a seed given by hand must carry 128 bits, see :func:`seed_bytes`). It writes

* the **sealed list**, what the administrator imports: ``<name>.csv`` (list, site, stratum, seq and ``arm_mac`` =
  HMAC-SHA-256 of (list, site, stratum, seq, arm) under the trial key, :mod:`immunoguide.trial.keys`),
  ``<name>.meta.json`` (ratio, stratification, generator, key id, the list MAC — no seed, no seed hash, no block
  sizes) and ``<name>.sha256`` (``sha256sum -c`` format, covering both: transfer integrity);
* the **master list**, kept by the key holder (``master/<name>.master.csv`` with blocks and arms,
  ``.master.json`` with the seed and block sizes, ``.master.sha256``); never imported.

Concealment by design: nothing a blinded role can read — the store's tables, the audit trail, exports, backups,
API answers — holds an arm, a hash of the arms, a block or block size, or a hash of the seed. The commitments
``arm_mac`` are pseudo-random without the key, so neither enumerating balanced arrangements nor trying seeds from
a dictionary can be checked against anything. Whoever holds the key (the running service and command line, the
DSMB's verifier) opens an arm by trying the stratum's arms (:func:`arm_of`) and verifies every list
(:func:`verify_allocation_lists`, stable check ids; with ``--lists`` against the master files).

Allocation (:func:`randomize`) never blocks on a fault it cannot fix: the transaction that records the patient
locks the list's row (``SELECT … FOR UPDATE``; SQLite serialises every writer with ``BEGIN IMMEDIATE``), checks
the list's MAC, takes the **lowest free slot** and records the patient, kits and audit entries, then commits. One
allocation per list runs at a time (the audit head serialises every commit anyway), so the slots taken are
always 1..k: a transaction that dies at any step — before the lock, holding it, after writing but before the
commit — releases the lock and its slot with it, and the next allocation takes that slot. No slot is skipped
or reused and no check raises a false alarm. A free slot below a taken one can only come from a store of the
earlier scheme (``SKIP LOCKED``, revision 0002); it is reported (IG-RAND-W005) and taken by the next allocation.
On PostgreSQL a client that hangs inside the transaction is cut off by the server after
:data:`IDLE_IN_TRANSACTION_TIMEOUT_S` (its lock goes with it).

Stratification and block design are *unknown* for ImmunoSep (spec §4: settings ``randomisation_stratification``
and ``randomisation_block_size`` default to ``not_applied``). Lists per site **and** endotype, and block sizes
(2, 4, 6), are therefore the platform's choice; every list's metadata says so and the verifier repeats it as a
warning.

Examples
--------
>>> import tempfile, pathlib
>>> from immunoguide.trial.keys import TrialKey
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> f = generate_allocation_list("ATH", "MALS", 10, out_dir=d, key=TrialKey.from_hex("11" * 32))
>>> f.n_slots >= 10, f.csv.name, f.master_csv.relative_to(d).as_posix()
(True, 'allocation_ATH_MALS.csv', 'master/allocation_ATH_MALS.master.csv')
>>> "arm" in f.csv.read_text().splitlines()[0].split(","), sorted(f.arm_counts.values()) == [f.n_slots // 2] * 2
(False, True)
>>> seed_bytes("s3cret")
Traceback (most recent call last):
...
immunoguide.errors.WeakSeed: [IG-E109] expected a seed of at least 32 hex digits (128 bits) ...
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from immunoguide.errors import (
    AllocationListMismatch,
    AllocationListUnavailable,
    AlreadyRandomized,
    ConsentMissing,
    DuplicateRecord,
    InputError,
    NotEligible,
    RandomizationWindowMissed,
    WeakSeed,
    WrongStratum,
)
from immunoguide.protocols import Protocol, load_protocol
from immunoguide.trial import audit, clock
from immunoguide.trial._authz import Actor, authorize
from immunoguide.trial._common import (
    DEFAULT_PROTOCOL,
    aware,
    consent_of,
    get_patient,
    latest_classification,
    protocol_of,
    require_active,
    slot_of,
)
from immunoguide.trial._sealed import _mismatch, arm_of, list_mac, randomization_window, slot_mac, stratum_arms
from immunoguide.trial.keys import TrialKey, load_key
from immunoguide.trial.models import AllocationList, AllocationSlot, Kit, Patient

__all__ = [
    "CHECK_IDS",
    "DEFAULT_BLOCK_SIZES",
    "IDLE_IN_TRANSACTION_TIMEOUT_S",
    "MIN_SEED_BITS",
    "AllocationFiles",
    "ListCheck",
    "arm_of",
    "check_list_files",
    "check_master_list",
    "generate_allocation_list",
    "import_allocation_list",
    "randomization_window",
    "randomize",
    "require_lists_verified",
    "seal_legacy_lists",
    "seed_bytes",
    "startup_checks",
    "stratum_arms",
    "verify_allocation_lists",
]

FORMAT = "immunoguide.allocation/2"
GENERATOR = "sha256-counter-drbg/2 (256-bit seed; rejection sampling, Fisher-Yates)"
CSV_HEADER = ("list", "site", "stratum", "seq", "arm_mac")
MASTER_HEADER = ("list", "site", "stratum", "seq", "block", "block_size", "arm")
#: The platform's block sizes when the protocol gives none (ImmunoSep: unknown, spec §4).
DEFAULT_BLOCK_SIZES: tuple[int, ...] = (2, 4, 6)
#: Entropy a seed given by hand must carry (the default seed has 256 bits from the OS's cryptographic source).
MIN_SEED_BITS = 128
#: PostgreSQL: a randomising transaction idle this long (a hung client) is ended by the server (seconds).
IDLE_IN_TRANSACTION_TIMEOUT_S = 120

#: Stable ids of the list checks (clinicedc ``edc_randomization.W001``/``E002`` style). Ids are never reused.
CHECK_IDS: dict[str, str] = {
    "IG-RAND-E001": "the slots stored for a list no longer match its MAC (slot edited, added or deleted), or a "
                    "slot's commitment opens to no arm of its stratum",
    "IG-RAND-E002": "a list file (sealed or master) differs from the list imported into the store",
    "IG-RAND-E003": "retired in revision 0003 (a free slot below a taken slot is now IG-RAND-W005)",
    "IG-RAND-E004": "a taken slot is inconsistent (no time/user, or patient of another site or stratum)",
    "IG-RAND-E005": "a randomised patient holds no slot",
    "IG-RAND-E006": "a list is stored in plaintext (revision 0002): run `immunoguide trial init` with the trial key",
    "IG-RAND-W001": "a list is nearly exhausted",
    "IG-RAND-W002": "stratification and block sizes are the platform's choice (unknown in the protocol)",
    "IG-RAND-W003": "no list file found to compare an imported list with",
    "IG-RAND-W004": "no allocation list imported yet",
    "IG-RAND-W005": "a free slot precedes a taken slot (left by an allocation of the pre-0003 scheme); the next "
                    "allocation of the list takes it",
    "IG-RAND-W006": "no trial key in this process: the lists' MACs and commitments were not checked",
}


# ---------------------------------------------------------------------------------------------------------------
# generation


def seed_bytes(seed: str | bytes | None) -> tuple[bytes, str]:
    """The generator's seed and its source: 32 bytes from :mod:`secrets` (``None``), or a seed given by hand.

    A hand-given seed must be hex text of at least 32 digits (128 bits) — e.g. ``openssl rand -hex 32`` — with no
    visible pattern (at least 8 distinct digits, not one short block repeated), or at least 16 raw bytes.
    Words, dates and small numbers are refused (:class:`~immunoguide.errors.WeakSeed`): a list made from a
    guessable seed can be rebuilt by anyone who guesses it. The check cannot see that hex text was derived from a
    guessable secret; use the default.
    """
    if seed is None:
        return secrets.token_bytes(32), "csprng"
    if isinstance(seed, bytes):
        if len(seed) >= MIN_SEED_BITS // 8 and len(set(seed)) >= 8:
            return seed, "user"
        raise WeakSeed(expected=f"at least {MIN_SEED_BITS // 8} random bytes", got=f"{len(seed)} bytes", where="seed",
                       todo="omit the seed (a 256-bit seed is drawn for you)")
    t = seed.strip().lower() if isinstance(seed, str) else ""
    digits = MIN_SEED_BITS // 4
    ok = bool(re.fullmatch(r"[0-9a-f]+", t)) and len(t) >= digits and len(t) % 2 == 0 and len(set(t)) >= 8
    if ok:
        for period in range(1, len(t) // 2 + 1):
            if len(t) % period == 0 and t == t[:period] * (len(t) // period):
                ok = False
                break
    if not ok:
        shown = f"{len(str(seed))} characters" if isinstance(seed, str) else type(seed).__name__
        raise WeakSeed(expected=f"a seed of at least {digits} hex digits ({MIN_SEED_BITS} bits) from a random source",
                       got=shown, where="seed",
                       todo="omit --seed (a 256-bit seed is drawn for you), or give `openssl rand -hex 32`")
    return bytes.fromhex(t), "user"


class _Drbg:
    """Deterministic bits: SHA-256(key ‖ counter), key = SHA-256(format ‖ seed)."""

    def __init__(self, seed: bytes) -> None:
        self._key = hashlib.sha256(FORMAT.encode() + b"\0" + seed).digest()
        self._counter = 0

    def _u64(self) -> int:
        block = hashlib.sha256(self._key + self._counter.to_bytes(8, "big")).digest()
        self._counter += 1
        return int.from_bytes(block[:8], "big")

    def randbelow(self, n: int) -> int:
        limit = (1 << 64) - ((1 << 64) % n)
        while True:
            r = self._u64()
            if r < limit:
                return r % n

    def shuffle(self, items: list[Any]) -> None:
        for i in range(len(items) - 1, 0, -1):
            j = self.randbelow(i + 1)
            items[i], items[j] = items[j], items[i]


@dataclass(frozen=True)
class AllocationFiles:
    """The files written by :func:`generate_allocation_list` (sealed list + master list) and their checksums."""

    csv: Path
    meta: Path
    sha256: Path
    master_csv: Path
    master_meta: Path
    n_slots: int
    file_sha256: str
    list_mac: str
    arm_counts: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (no arm, no arm count: safe to print)."""
        return {"csv": str(self.csv), "meta": str(self.meta), "sha256": str(self.sha256),
                "master_csv": str(self.master_csv), "master_meta": str(self.master_meta), "n_slots": self.n_slots,
                "file_sha256": self.file_sha256, "list_mac": self.list_mac}


def _settings_choice(protocol: Protocol) -> tuple[dict[str, Any], list[str]]:
    used = protocol.resolve_settings()
    warnings = []
    for name in ("randomisation_stratification", "randomisation_block_size"):
        if name in protocol.settings and protocol.settings[name].confidence == "unknown":
            warnings.append(protocol.settings[name].warning)
    return {k: used[k] for k in ("randomisation_stratification", "randomisation_block_size") if k in used}, warnings


def _csv_bytes(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(r)
    return buf.getvalue().encode()


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _write_with_sums(csv_path: Path, csv_data: bytes, meta_path: Path, meta_data: bytes, sha_path: Path) -> str:
    csv_path.write_bytes(csv_data)
    meta_path.write_bytes(meta_data)
    file_sha = hashlib.sha256(csv_data).hexdigest()
    sha_path.write_text(f"{file_sha}  {csv_path.name}\n{hashlib.sha256(meta_data).hexdigest()}  {meta_path.name}\n")
    return file_sha


def generate_allocation_list(
    site: str,
    stratum: str,
    n: int,
    seed: str | bytes | None = None,
    block_sizes: Sequence[int] | None = None,
    *,
    out_dir: str | Path,
    key: TrialKey | None = None,
    protocol: str = DEFAULT_PROTOCOL,
    name: str | None = None,
) -> AllocationFiles:
    """Write a sealed allocation list for one site and stratum, and its master list (permuted blocks).

    Parameters
    ----------
    site, stratum : str
        Site code and stratum (an endotype of the protocol: ``MALS`` or ``immunoparalysis``).
    n : int
        Minimum number of slots; whole blocks are generated until at least ``n`` slots exist.
    seed : str or bytes, optional
        Default: 256 bits from :mod:`secrets` (recommended). A seed given by hand must carry 128 bits
        (:func:`seed_bytes`); it is written to the master list only.
    block_sizes : sequence of int, optional
        Block sizes drawn uniformly per block; each must be a multiple of the ratio's total (2 for 1:1).
        Default: :data:`DEFAULT_BLOCK_SIZES` (platform choice). Recorded in the master list only.
    out_dir : path
        Directory for the sealed ``allocation_<site>_<stratum>.csv``, ``.meta.json`` and ``.sha256``; the master
        files go to ``out_dir/master/``.
    key : TrialKey, optional
        The trial key (default: from the environment, required).
    protocol : str
        Protocol id (arms and ratio).

    Returns
    -------
    AllocationFiles
    """
    key = key or load_key(required=True)
    assert key is not None
    proto = load_protocol(protocol)
    weights = stratum_arms(proto, stratum)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InputError(expected="a number of slots >= 1", got=n, where="n", todo="give -n")
    raw_seed, seed_source = seed_bytes(seed)
    total_w = sum(weights.values())
    settings, warnings = _settings_choice(proto)
    block_source = "platform"
    if block_sizes is None:
        block_sizes = DEFAULT_BLOCK_SIZES
    else:
        block_source = "caller"
    sizes = tuple(int(b) for b in block_sizes)
    if not sizes or any(b <= 0 or b % total_w for b in sizes):
        raise InputError(expected=f"block sizes that are positive multiples of {total_w} (ratio {weights})",
                         got=list(block_sizes), where="block_sizes", todo="e.g. 2,4,6 for 1:1")
    arms_sorted = sorted(weights)
    rng = _Drbg(raw_seed)
    rows: list[tuple[str, str, int, int, int, str]] = []
    block = 0
    while len(rows) < n:
        block += 1
        size = sizes[rng.randbelow(len(sizes))]
        items = [a for a in arms_sorted for _ in range(size * weights[a] // total_w)]
        rng.shuffle(items)
        for arm in items:
            rows.append((site, stratum, len(rows) + 1, block, size, arm))
    list_name = name or f"{site}-{stratum}"
    stem = f"allocation_{site}_{stratum}"
    out = Path(out_dir)
    master_dir = out / "master"
    master_dir.mkdir(parents=True, exist_ok=True)
    macs = [slot_mac(key, list_name, site, stratum, seq, arm) for _, _, seq, _, _, arm in rows]
    lmac = list_mac(key, list_name, site, stratum, proto.label, macs)
    sealed_rows = [(list_name, site, stratum, seq, mac) for (_, _, seq, _, _, _), mac in zip(rows, macs, strict=True)]
    meta = {
        "format": FORMAT,
        "name": list_name,
        "protocol": proto.label,
        "protocol_sha256": proto.sha256,
        "site": site,
        "stratum": stratum,
        "n_slots": len(rows),
        "ratio": weights,
        "generator": GENERATOR,
        "seed_source": seed_source,
        "key_id": key.key_id,
        "list_mac": lmac,
        "block_design": "permuted blocks balanced to the ratio; block sizes concealed (kept with the master list)",
        "block_sizes_source": block_source,
        "stratification": {
            "factors": ["site", "endotype"],
            "source": "platform",
            "protocol_settings": settings,
            "note": "Stratification factors and block design are unknown for this protocol (spec §4); one list per "
            "site and endotype stratum and the block sizes are the platform's choice.",
        },
        "warnings": warnings,
    }
    csv_path, meta_path, sha_path = out / f"{stem}.csv", out / f"{stem}.meta.json", out / f"{stem}.sha256"
    sealed_bytes = _csv_bytes(CSV_HEADER, sealed_rows)
    file_sha = _write_with_sums(csv_path, sealed_bytes, meta_path, _json_bytes(meta), sha_path)
    master_meta = {**meta, "format": FORMAT + "+master", "seed": raw_seed.hex(), "block_sizes": list(sizes),
                   "n_requested": n, "n_blocks": block, "sealed_csv_sha256": file_sha,
                   "note": "MASTER LIST: arms in plaintext. Keep with the trial key (unblinded list statistician); "
                           "never give it to blinded staff or import it."}
    mcsv, mmeta, msha = (master_dir / f"{stem}.master.csv", master_dir / f"{stem}.master.json",
                         master_dir / f"{stem}.master.sha256")
    _write_with_sums(mcsv, _csv_bytes(MASTER_HEADER, [(list_name, *r) for r in rows]), mmeta, _json_bytes(master_meta),
                     msha)
    return AllocationFiles(csv_path, meta_path, sha_path, mcsv, mmeta, len(rows), file_sha, lmac,
                           dict(Counter(r[5] for r in rows)))


def _read_bundle(csv_path: Path, sha_path: Path, meta_path: Path) -> tuple[dict[str, Any], list[list[str]], list[str], bytes]:
    for pth in (csv_path, sha_path, meta_path):
        if not pth.is_file():
            raise _mismatch(str(pth), "allocation list files", "keep the .csv, its metadata and checksum file together",
                            expected="the list's three files")
    sums: dict[str, str] = {}
    for line in sha_path.read_text().splitlines():
        if line.strip():
            digest, _, fname = line.partition("  ")
            sums[fname.strip()] = digest.strip()
    csv_bytes, meta_bytes = csv_path.read_bytes(), meta_path.read_bytes()
    for pth, data in ((csv_path, csv_bytes), (meta_path, meta_bytes)):
        actual = hashlib.sha256(data).hexdigest()
        if sums.get(pth.name) != actual:
            raise _mismatch(f"{pth.name}: sha256 {actual}, checksum file says {sums.get(pth.name)}", str(sha_path),
                            "the list was changed after generation: use the original files from the statistician")
    try:
        meta = json.loads(meta_bytes)
        reader = csv.reader(io.StringIO(csv_bytes.decode()))
        header = next(reader)
        raw = [r for r in reader if r]
    except (ValueError, StopIteration) as exc:
        raise _mismatch(str(exc), str(csv_path), "regenerate the list") from None
    return meta, raw, header, csv_bytes


def check_list_files(csv_path: str | Path, *, key: TrialKey | None = None) -> dict[str, Any]:
    """Verify a sealed list's checksum file and content; return its metadata and rows (raises AllocationListMismatch).

    Checks: the ``.sha256`` file covers the CSV and the metadata and both match; the format and header; slots
    numbered 1..n; one site, stratum and list name, as in the metadata. With the trial key also: the key id, the
    list MAC, every commitment opening to an arm of the stratum, and the arms in the protocol's ratio overall.
    """
    csv_path = Path(csv_path)
    stem = csv_path.name.removesuffix(".csv")
    meta, raw, header, csv_bytes = _read_bundle(csv_path, csv_path.with_name(f"{stem}.sha256"),
                                                csv_path.with_name(f"{stem}.meta.json"))
    if meta.get("format") != FORMAT or tuple(header) != CSV_HEADER:
        raise _mismatch(f"format {meta.get('format')}, header {header}", str(csv_path),
                        "import the sealed list (allocation_<site>_<stratum>.csv) written by `immunoguide trial "
                        "allocation generate`; plaintext lists of earlier versions are no longer imported",
                        expected=f"a sealed list ({FORMAT}, header {','.join(CSV_HEADER)})")
    rows: list[tuple[str, str, int, str]] = []
    names = set()
    for i, r in enumerate(raw, start=1):
        try:
            lname, site, stratum, seq, mac = r
            rows.append((site, stratum, int(seq), mac))
            names.add(lname)
        except ValueError:
            raise _mismatch(r, f"{csv_path.name} line {i + 1}", "each line has 5 fields with an integer seq") from None
    if not rows or [r[2] for r in rows] != list(range(1, len(rows) + 1)):
        raise _mismatch("slot numbers not 1..n in order", str(csv_path), "regenerate the list")
    if len({(r[0], r[1]) for r in rows}) != 1 or len(names) != 1:
        raise _mismatch("several sites, strata or names in one list", str(csv_path), "one list per site and stratum")
    name = names.pop()
    site, stratum = rows[0][0], rows[0][1]
    if (meta.get("site"), meta.get("stratum"), meta.get("name"), meta.get("n_slots")) != (site, stratum, name, len(rows)):
        raise _mismatch("metadata and CSV disagree on site, stratum, name or size", str(csv_path), "regenerate the list")
    out: dict[str, Any] = {"meta": meta, "rows": rows, "name": name, "file_sha256": hashlib.sha256(csv_bytes).hexdigest(),
                           "list_mac": meta.get("list_mac")}
    if key is not None:
        if meta.get("key_id") != key.key_id:
            raise _mismatch(f"list sealed with key id {meta.get('key_id')}", str(csv_path),
                            "the list was generated with another trial key: regenerate it with this trial's key",
                            expected=f"a list sealed with the trial key {key.key_id}")
        macs = [r[3] for r in rows]
        if not key.check("allocation", ["list", name, site, stratum, meta.get("protocol"), len(macs), macs],
                         meta.get("list_mac")):
            raise _mismatch("the list MAC does not verify", str(csv_path), "the list was edited: use the original files")
        ratio: dict[str, int] = meta.get("ratio", {})
        arms: list[str] = []
        for site_, stratum_, slot_no, mac in rows:
            arm = next((a for a in ratio if key.check("allocation", ["slot", name, site_, stratum_, slot_no, a], mac)),
                       None)
            if arm is None:
                raise _mismatch(f"slot {slot_no} opens to no arm of {sorted(ratio)}", str(csv_path), "regenerate the list")
            arms.append(arm)
        total = sum(ratio.values())
        counts = Counter(arms)
        if not total or len(arms) % total or any(counts.get(a, 0) != len(arms) * w // total for a, w in ratio.items()):
            raise _mismatch(f"arm counts {dict(counts)} not in the ratio {ratio}", str(csv_path), "regenerate the list")
        out["arms"] = arms
    return out


def check_master_list(master_csv: str | Path, *, key: TrialKey) -> dict[str, Any]:
    """Verify a master list (the key holder's plaintext copy): checksums, complete balanced blocks, and that it
    seals to the list MAC it records. Returns its metadata, rows and list MAC."""
    master_csv = Path(master_csv)
    stem = master_csv.name.removesuffix(".master.csv")
    meta, raw, header, _ = _read_bundle(master_csv, master_csv.with_name(f"{stem}.master.sha256"),
                                        master_csv.with_name(f"{stem}.master.json"))
    if tuple(header) != MASTER_HEADER:
        raise _mismatch(header, str(master_csv), f"the header must be {','.join(MASTER_HEADER)}")
    rows: list[tuple[str, str, int, int, int, str]] = []
    names = set()
    for i, r in enumerate(raw, start=1):
        try:
            lname, site, stratum, seq, block, size, arm = r
            rows.append((site, stratum, int(seq), int(block), int(size), arm))
            names.add(lname)
        except ValueError:
            raise _mismatch(r, f"{master_csv.name} line {i + 1}", "7 fields with integer seq/block/size") from None
    if not rows or [r[2] for r in rows] != list(range(1, len(rows) + 1)) or len(names) != 1:
        raise _mismatch("slots not 1..n, or several list names", str(master_csv), "use the original master list")
    ratio: dict[str, int] = meta.get("ratio", {})
    total_w = sum(ratio.values()) if ratio else 0
    blocks: dict[int, list[tuple[str, str, int, int, int, str]]] = {}
    for row in rows:
        blocks.setdefault(row[3], []).append(row)
    for b, members in blocks.items():
        bsize = members[0][4]
        counts = Counter(m[5] for m in members)
        want = {a: bsize * w // total_w for a, w in ratio.items()} if total_w else {}
        if any(m[4] != bsize for m in members) or len(members) != bsize or dict(counts) != want:
            raise _mismatch(f"block {b}: {dict(counts)} in {len(members)} slots (size {bsize})", str(master_csv),
                            "every block must be complete and balanced to the ratio")
    name = names.pop()
    site, stratum = rows[0][0], rows[0][1]
    macs = [slot_mac(key, name, site, stratum, seq, arm) for _, _, seq, _, _, arm in rows]
    lmac = list_mac(key, name, site, stratum, str(meta.get("protocol")), macs)
    if lmac != meta.get("list_mac"):
        raise _mismatch("the master list does not seal to its recorded list MAC", str(master_csv),
                        "the master list was edited, or sealed with another key")
    return {"meta": meta, "rows": rows, "name": name, "list_mac": lmac}


def import_allocation_list(
    session: Session, csv_path: str | Path, *, actor: Actor, now: datetime,
) -> dict[str, Any]:
    """Import a verified sealed list (administrator): one list per site and stratum, every slot audited.

    The administrator never sees an arm: the sealed file holds commitments only. The importing process needs the
    trial key to verify the list (key id, MAC, commitments, ratio).

    Raises AllocationListMismatch (checksums, MAC, content, arms not of the protocol's stratum), DuplicateRecord
    (a list for the site and stratum, or of that name, is already imported), NotAuthorized, TrialKeyError.
    """
    authorize(actor, "import_allocation")
    aware(now, "now")
    key = clock.require_key(session, "to verify a sealed allocation list")
    clock.store_config(session)  # the key must be the store's
    checked = check_list_files(csv_path, key=key)
    meta, rows = checked["meta"], checked["rows"]
    proto = load_protocol(meta.get("protocol", DEFAULT_PROTOCOL))
    try:
        weights = stratum_arms(proto, meta["stratum"])
    except WrongStratum as exc:
        raise _mismatch(meta["stratum"], str(csv_path), "the stratum must be an endotype of the protocol") from exc
    if meta.get("ratio") != weights or proto.label != meta.get("protocol"):
        raise _mismatch(f"ratio {meta.get('ratio')} of {meta.get('protocol')}", str(csv_path),
                        f"the list must use the arms {weights} of stratum {meta['stratum']} in {proto.label}")
    dup = session.execute(select(AllocationList).where(
        (AllocationList.site == meta["site"]) & (AllocationList.stratum == meta["stratum"])
        | (AllocationList.name == meta["name"]))).scalar_one_or_none()
    if dup is not None:
        raise DuplicateRecord(expected="no list yet for this site and stratum", got=f"{dup.name} ({dup.site}, {dup.stratum})",
                              where="allocation_lists", todo="a list is imported once; it is never replaced")
    lst = AllocationList(
        name=meta["name"], site=meta["site"], stratum=meta["stratum"], protocol=proto.label, n_slots=len(rows),
        file_sha256=checked["file_sha256"], content_sha256=None, meta=meta, imported_at=now, imported_by=actor.user,
        list_mac=checked["list_mac"],
    )
    audit.insert(session, actor, now, lst)
    clock.forget_trial_start(session)  # the first import starts the trial
    slots = [AllocationSlot(list_id=lst.id, seq=seq, block=None, block_size=None, arm=None, arm_mac=mac,
                            patient_id=None, allocated_at=None, allocated_by=None) for _, _, seq, mac in rows]
    audit.insert_many(session, actor, now, slots)
    return {"list": lst.name, "site": lst.site, "stratum": lst.stratum, "n_slots": lst.n_slots,
            "file_sha256": lst.file_sha256, "list_mac": lst.list_mac, "warnings": meta.get("warnings", [])}


# ---------------------------------------------------------------------------------------------------------------
# opening arms (key holders only)


def _stored_list_mac(session: Session, lst: AllocationList, key: TrialKey) -> tuple[list[AllocationSlot], bool]:
    slots = list(session.execute(select(AllocationSlot).where(AllocationSlot.list_id == lst.id)
                                 .order_by(AllocationSlot.seq).execution_options(populate_existing=True)).scalars())
    macs = [s.arm_mac or "" for s in slots]
    ok = (len(slots) == lst.n_slots and [s.seq for s in slots] == list(range(1, lst.n_slots + 1))
          and key.check("allocation", ["list", lst.name, lst.site, lst.stratum, lst.protocol, len(macs), macs],
                        lst.list_mac))
    return slots, ok


# ---------------------------------------------------------------------------------------------------------------
# sealing a revision-0002 store


def seal_legacy_lists(session: Session, *, now: datetime) -> int:
    """Seal every list still stored in plaintext (revision 0002): arms → commitments, legacy columns → NULL, kit
    contents → NULL, and the payloads of their earlier audit entries redacted (the redaction is itself audited).

    Called by :meth:`~immunoguide.trial.store.TrialStore.initialise`. Returns the number of lists sealed.
    """
    from immunoguide.trial.accounts import SYSTEM_ACTOR

    legacy = list(session.execute(select(AllocationList).where(AllocationList.list_mac.is_(None))
                                  .order_by(AllocationList.id)).scalars())
    if not legacy:
        return 0
    key = clock.require_key(session, "to seal the plaintext allocation lists of a revision-0002 store")
    cutoff = audit.head_seq(session)
    redact_rows: list[tuple[str, str]] = []
    reason = "sealing a revision-0002 plaintext allocation list with the trial key (issue 14)"
    for lst in legacy:
        slots = list(session.execute(select(AllocationSlot).where(AllocationSlot.list_id == lst.id)
                                     .order_by(AllocationSlot.seq)).scalars())
        macs = []
        for s in slots:
            if s.arm is None:
                raise _mismatch(f"slot {s.seq} of {lst.name} has neither arm nor commitment", "allocation_slots",
                                "restore the store from a backup")
            mac = slot_mac(key, lst.name, lst.site, lst.stratum, s.seq, s.arm)
            macs.append(mac)
            audit.update(session, SYSTEM_ACTOR, now, s, redact_before=True, arm_mac=mac, arm=None, block=None,
                         block_size=None)
            redact_rows.append(("allocation_slots", str(s.id)))
            if s.patient_id is not None:
                for k in session.execute(select(Kit).where(Kit.patient_id == s.patient_id)).scalars():
                    if k.regimen is not None:
                        audit.update(session, SYSTEM_ACTOR, now, k, redact_before=True, regimen=None)
                        redact_rows.append(("kits", str(k.id)))
        meta = {k: v for k, v in (lst.meta or {}).items()
                if k not in ("seed_sha256", "content_sha256", "block_sizes", "n_requested", "n_blocks")}
        lmac = list_mac(key, lst.name, lst.site, lst.stratum, lst.protocol, macs)
        meta.update({"format": FORMAT, "key_id": key.key_id, "list_mac": lmac, "seed_source": "legacy (revision 0002)",
                     "block_design": "permuted blocks; block sizes removed from the store when sealed"})
        audit.update(session, SYSTEM_ACTOR, now, lst, redact_before=True, list_mac=lmac, content_sha256=None,
                     file_sha256=None, meta=meta)
        redact_rows.append(("allocation_lists", str(lst.id)))
    audit.redact(session, SYSTEM_ACTOR, now, patient_id=None, tables=["allocation_lists", "allocation_slots", "kits"],
                 reason=reason, up_to_seq=cutoff, rows=redact_rows)
    return len(legacy)


# ---------------------------------------------------------------------------------------------------------------
# verification


@dataclass(frozen=True)
class ListCheck:
    """One finding of :func:`verify_allocation_lists` (``id`` from :data:`CHECK_IDS`; level error/warning)."""

    id: str
    level: str
    message: str
    list: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {"id": self.id, "level": self.level, "message": self.message, "list": self.list}


def _master_file(list_dir: Path, lst: AllocationList) -> Path | None:
    stem = f"allocation_{lst.site}_{lst.stratum}"
    for cand in (list_dir / "master" / f"{stem}.master.csv", list_dir / f"{stem}.master.csv"):
        if cand.is_file():
            return cand
    return None


def verify_allocation_lists(session: Session, *, list_dir: str | Path | None = None,
                            exhaustion_warning_fraction: float = 0.1) -> list[ListCheck]:
    """Check every imported list against its MAC, its files (when ``list_dir`` is given) and its use.

    Run at start-up (CLI ``allocation verify``, service start: reported, never blocking) and after load tests.
    Errors (``IG-RAND-E…``) are integrity failures of one list; warnings (``IG-RAND-W…``) are reported. Without the
    trial key the MACs and commitments cannot be checked (IG-RAND-W006). See :data:`CHECK_IDS`.
    """
    out: list[ListCheck] = []
    key = clock.session_key(session)
    lists = list(session.execute(select(AllocationList).order_by(AllocationList.id)
                                 .execution_options(populate_existing=True)).scalars())
    if not lists:
        out.append(ListCheck("IG-RAND-W004", "warning", "no allocation list imported yet: randomisation is not "
                             "possible (import one per site and stratum with `immunoguide trial allocation import`)"))
    elif key is None:
        out.append(ListCheck("IG-RAND-W006", "warning", CHECK_IDS["IG-RAND-W006"]))
    for lst in lists:
        slots = list(session.execute(select(AllocationSlot).where(AllocationSlot.list_id == lst.id)
                                     .order_by(AllocationSlot.seq).execution_options(populate_existing=True)).scalars())
        if lst.list_mac is None:
            out.append(ListCheck("IG-RAND-E006", "error", f"list {lst.name}: {CHECK_IDS['IG-RAND-E006']}", lst.name))
        elif len(slots) != lst.n_slots:
            out.append(ListCheck("IG-RAND-E001", "error", f"list {lst.name}: expected {lst.n_slots} slots; the store "
                                 f"holds {len(slots)}. Restore the list from a backup.", lst.name))
        elif key is not None:
            _, ok = _stored_list_mac(session, lst, key)
            bad = []
            for s in slots:
                try:
                    arm_of(session, s, lst)
                except AllocationListMismatch:
                    bad.append(s.seq)
            if not ok or bad:
                out.append(ListCheck("IG-RAND-E001", "error",
                                     f"list {lst.name}: the stored slots do not match the list MAC"
                                     + (f"; slot(s) {bad[:10]} open to no arm" if bad else "")
                                     + ". Stop randomising this list and restore it from a backup.", lst.name))
        taken = [s for s in slots if s.patient_id is not None]
        if taken:
            last = max(s.seq for s in taken)
            free_before = [s.seq for s in slots if s.patient_id is None and s.seq < last]
            if free_before:
                out.append(ListCheck("IG-RAND-W005", "warning",
                                     f"list {lst.name}: slot(s) {free_before[:10]} are free below the taken slot "
                                     f"{last}; the next allocation takes the lowest free slot", lst.name))
        pats = {p.id: p for p in session.execute(select(Patient).where(Patient.id.in_([s.patient_id for s in taken]))).scalars()}
        for s in taken:
            p = pats.get(s.patient_id or -1)
            if s.allocated_at is None or not s.allocated_by or p is None or p.site != lst.site or (
                p.stratum != lst.stratum and not p.data_removed
            ):
                out.append(ListCheck("IG-RAND-E004", "error",
                                     f"list {lst.name}: slot {s.seq} is held by a patient of another site or stratum, "
                                     "or lacks its allocation time/user", lst.name))
        free = lst.n_slots - len(taken)
        if free <= max(2, exhaustion_warning_fraction * lst.n_slots):
            out.append(ListCheck("IG-RAND-W001", "warning", f"list {lst.name}: {free} of {lst.n_slots} slots left; "
                                 "generate and import the next list in time", lst.name))
        meta = lst.meta if isinstance(lst.meta, dict) else {}
        strat = meta.get("stratification", {})
        if strat.get("source") == "platform" or meta.get("block_sizes_source") == "platform":
            out.append(ListCheck("IG-RAND-W002", "warning", f"list {lst.name}: {strat.get('note', CHECK_IDS['IG-RAND-W002'])}",
                                 lst.name))
        if list_dir is not None:
            d = Path(list_dir)
            sealed = d / f"allocation_{lst.site}_{lst.stratum}.csv"
            master = _master_file(d, lst)
            if not sealed.is_file() and master is None:
                out.append(ListCheck("IG-RAND-W003", "warning",
                                     f"list {lst.name}: no file {sealed.name} (or its master list) in {list_dir}",
                                     lst.name))
            try:
                if sealed.is_file():
                    checked = check_list_files(sealed, key=key)
                    if checked["file_sha256"] != lst.file_sha256 or checked["list_mac"] != lst.list_mac:
                        raise _mismatch("the sealed file differs from the imported list", str(sealed), "")
                if master is not None and key is not None:
                    if check_master_list(master, key=key)["list_mac"] != lst.list_mac:
                        raise _mismatch("the master list does not seal to the imported list", str(master), "")
            except AllocationListMismatch as exc:
                out.append(ListCheck("IG-RAND-E002", "error",
                                     f"list {lst.name}: expected the files in {list_dir} to match the imported list "
                                     f"(list MAC {lst.list_mac}); got: {exc.got}.", lst.name))
    randomised = session.execute(
        select(Patient.code).where(Patient.status == "randomised", ~Patient.id.in_(
            select(AllocationSlot.patient_id).where(AllocationSlot.patient_id.is_not(None))))
    ).scalars().all()
    for code in randomised:
        out.append(ListCheck("IG-RAND-E005", "error", f"patient {code} is marked randomised but holds no slot"))
    return out


def require_lists_verified(session: Session, *, list_dir: str | Path | None = None) -> list[ListCheck]:
    """Run the verification; raise AllocationListMismatch on any error-level finding (for scripts and checks that
    must stop; randomisation itself checks only the list it draws from)."""
    checks = verify_allocation_lists(session, list_dir=list_dir)
    errors = [c for c in checks if c.level == "error"]
    if errors:
        raise _mismatch(f"{len(errors)} error(s); first {errors[0].id}: {errors[0].message}", "allocation lists",
                        "resolve the listed issues (`immunoguide trial allocation verify`)",
                        expected="allocation lists that verify against the store")
    return checks


def startup_checks(store: Any, *, list_dir: str | Path | None = None) -> list[ListCheck]:
    """What a service or command runs at start-up: schema at head, then every list verified.

    Raises StoreError (schema); returns every finding (errors included: they concern single lists, and randomising
    from such a list is refused by :func:`randomize` itself, so the rest of the trial goes on).
    """
    store.check_schema()
    with store.session() as s:
        return verify_allocation_lists(s, list_dir=list_dir)


# ---------------------------------------------------------------------------------------------------------------
# allocation


def _lock_list(session: Session, site: str, stratum: str) -> AllocationList | None:
    """The list of a site and stratum, row-locked until the commit: one allocation per list at a time.

    On PostgreSQL the transaction also gets ``idle_in_transaction_session_timeout`` (a client that hangs while
    holding the lock is cut off by the server and the lock released).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SET LOCAL idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_TIMEOUT_S}s'"))
    return session.execute(
        select(AllocationList).where(AllocationList.site == site, AllocationList.stratum == stratum)
        .with_for_update().execution_options(populate_existing=True)
    ).scalar_one_or_none()


def _take_slot(session: Session, lst: AllocationList, key: TrialKey) -> AllocationSlot | None:
    """Under the list lock: check the list against its MAC and return its lowest free slot (None when exhausted)."""
    if lst.list_mac is None:
        raise _mismatch(f"list {lst.name} is stored in plaintext (revision 0002)", "allocation_lists",
                        "run `immunoguide trial init` with the trial key to seal it")
    slots, ok = _stored_list_mac(session, lst, key)
    if not ok:
        raise _mismatch(f"list {lst.name}: the stored slots do not match the list MAC", "allocation_slots",
                        "stop randomising at this site and stratum and run `immunoguide trial allocation verify` "
                        "(other lists are not affected)")
    return next((s for s in slots if s.patient_id is None), None)


def randomize(
    session: Session, code: str, *, actor: Actor, now: datetime, stratum: str | None = None,
) -> dict[str, Any]:
    """Give the patient the next free slot of their site's list for their stratum, and their IV and SC kits.

    The patient must be screened, consented (not refused), classified into a stratum (an endotype of the
    protocol) and eligible now with the first dose planned at ``now``; ``now`` must lie inside the protocol's
    window from Sepsis-3 onset (ImmunoSep I7: < 72 h). Everything happens in the caller's transaction.

    Parameters
    ----------
    stratum : str, optional
        The stratum the user expects; refused (WrongStratum) if it is not the patient's.

    Returns
    -------
    dict
        Randomisation number, stratum, time, kits (numbers and labels); the arm and kit contents only for
        unblinded roles (through :mod:`immunoguide.trial.access`).

    Raises
    ------
    UnknownPatient, NotAuthorized, PatientWithdrawn
    AlreadyRandomized
        The patient already holds a slot.
    ConsentMissing, NotEligible, WrongStratum, RandomizationWindowMissed
    AllocationListUnavailable
        No list for the site and stratum, or no free slot left.
    AllocationListMismatch
        The list's slots no longer match its MAC (this list only; other lists go on).
    ImplausibleTime
        On a real store, ``now`` is not the system clock's time (within the tolerance).
    TrialKeyError
        The process has no trial key (needed to check the list and assign the kits).
    """
    aware(now, "now")
    clock.check_event_time(session, now, what="randomisation time")
    key = clock.require_key(session, "to randomise (the list's MAC and the kits)")
    p = get_patient(session, code, actor, "randomize")
    require_active(p)
    held = slot_of(session, p)
    if held is not None:
        lst = session.get(AllocationList, held.list_id)
        raise AlreadyRandomized(
            expected="a patient not yet randomised",
            got=f"{p.code} holds {lst.name if lst else '?'} slot {held.seq} since {held.allocated_at.isoformat() if held.allocated_at else '?'}",
            where="allocation_slots", todo="a patient is randomised once only; look the allocation up instead",
        )
    proto = protocol_of(p)
    consent = consent_of(session, p)
    if consent is None:
        raise ConsentMissing(expected="a recorded informed consent", got=None, where=p.code,
                             todo="record consent first (`immunoguide trial consent`)")
    if consent.given_by == "refused":
        raise ConsentMissing(expected="consent given", got="refused", where=p.code,
                             todo="a patient who refused consent is not randomised")
    cl = latest_classification(session, p)
    if cl is None or p.stratum is None:
        if stratum is not None:
            raise WrongStratum(expected=f"a patient classified into stratum {stratum}",
                               got=cl.endotype if cl else "not classified", where=p.code,
                               todo="enter the ferritin and mHLA-DR results (`immunoguide trial classify-lab`)")
        raise NotEligible(expected="a patient classified into a stratum (MALS or immunoparalysis)",
                          got=cl.endotype if cl else "not classified", where=p.code,
                          todo="enter the laboratory results; unclassified patients are screen failures")
    if stratum is not None and stratum != p.stratum:
        raise WrongStratum(expected=f"stratum {p.stratum} (the patient's classified endotype)", got=stratum,
                           where=p.code, todo="check the patient; the stratum is the endotype from the laboratory")
    window = randomization_window(proto)
    if window is not None:
        cid, comparator, hours, _anchor = window
        if p.sepsis3_onset is None:
            raise NotEligible(expected="a recorded Sepsis-3 onset", got=None, where=f"{p.code} ({cid})",
                              todo="record the Sepsis-3 onset time at screening")
        elapsed = (now - p.sepsis3_onset).total_seconds() / 3600.0
        from immunoguide.protocols import compare

        if elapsed < 0 or not compare(elapsed, comparator, hours):
            raise RandomizationWindowMissed(
                expected=f"first dose {comparator} {hours:g} h after Sepsis-3 onset ({cid})",
                got=f"{elapsed:.1f} h at {now.isoformat()} (onset {p.sepsis3_onset.isoformat()})",
                where=p.code, todo="the window has closed: the patient cannot be randomised",
            )
    from immunoguide.trial.enrolment import evaluate_now, require_eligible, store_evaluation

    exists = session.execute(select(AllocationList.id).where(AllocationList.site == p.site,
                                                             AllocationList.stratum == p.stratum)).first()
    if exists is None:
        raise AllocationListUnavailable(expected=f"an imported allocation list for site {p.site}, stratum {p.stratum}",
                                        got=None, where="allocation_lists",
                                        todo="the administrator imports the list (`immunoguide trial allocation import`)")
    result = evaluate_now(session, p, now, planned_first_dose=now, consent=consent, classification=cl)
    require_eligible(result, p.code)
    list_arms = sorted(stratum_arms(proto, p.stratum))
    if not set(list_arms) <= set(result.allowed_arms):
        # checked before any slot is looked at, so the refusal reveals nothing about the next allocation
        raise NotEligible(expected=f"a patient open to every arm of the stratum's list {list_arms}",
                          got=list(result.allowed_arms), where=f"{p.code} (overlay)",
                          todo="an overlay (e.g. COVID-19: MALS arms only) closes an arm of this stratum")
    # Everything that does not depend on the slot is written first (the screening-log entry and its audit payload),
    # so the list lock — taken last and held to the commit — covers only the slot, the kits and the chaining.
    store_evaluation(session, p, actor, now, "randomisation", result)
    session.flush()
    lst = _lock_list(session, p.site, p.stratum)
    assert lst is not None
    slot = _take_slot(session, lst, key)
    if slot is None:
        raise AllocationListUnavailable(expected=f"a free slot in list {lst.name}", got=f"all {lst.n_slots} slots taken",
                                        where="allocation_slots", todo="import the next list for this site and stratum")
    arm = arm_of(session, slot, lst)
    audit.update(session, actor, now, slot, patient_id=p.id, allocated_at=now, allocated_by=actor.user)
    audit.update(session, actor, now, p, status="randomised")
    from immunoguide.trial import kits as kits_module
    from immunoguide.trial.access import randomization_view

    kits = kits_module.assign_kits(session, actor, now, p, proto, lst, slot, arm=arm)
    return randomization_view(session, p, actor, slot=slot, allocation_list=lst, kits=kits, arm=arm)
