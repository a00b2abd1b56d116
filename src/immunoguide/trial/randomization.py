"""Randomisation from pre-generated, checksummed allocation lists: generate, import, verify, allocate.

No random call decides an allocation at the bedside. The trial statistician generates one list per site and
stratum (:func:`generate_allocation_list`: seeded, permuted blocks of randomly chosen size, each block balanced
to the protocol's ratio — ImmunoSep 1:1), which writes three files: ``<name>.csv`` (the slots),
``<name>.meta.json`` (how it was made) and ``<name>.sha256`` (``sha256sum -c`` format, covering both). The
list is imported once (:func:`import_allocation_list`, checksums verified, content validated) and verified
against the store at start-up (:func:`verify_allocation_lists`, stable check ids). :func:`randomize` gives a
patient the next free slot of the list for their site and stratum, inside one transaction.

Concurrency: on PostgreSQL the patient row is locked, then the lowest free slot is taken with
``SELECT … FOR UPDATE SKIP LOCKED`` (concurrent clients of the same list take different slots and never wait
on each other's slot), and the audit head only at commit; a transaction that dies releases its slot, which the next
allocation takes. On SQLite every transaction holds the database write lock from ``BEGIN IMMEDIATE``. A slot is
never reused (unique patient per slot, unique slot per patient) and, once all transactions have ended, never
skipped.

Stratification and block design are *unknown* for ImmunoSep (spec §4: settings ``randomisation_stratification``
and ``randomisation_block_size`` default to ``not_applied``). Lists per site **and** endotype, and block sizes
(2, 4, 6), are therefore the platform's choice; every list's metadata says so and the verifier repeats it as a
warning.

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> f = generate_allocation_list("ATH", "MALS", 10, seed=42, out_dir=d)
>>> f.n_slots >= 10, f.csv.name, sorted(f.arm_counts.items())
(True, 'allocation_ATH_MALS.csv', [('mals_anakinra', 5), ('mals_placebo', 5)])
>>> check_list_files(f.csv)["content_sha256"] == f.content_sha256
True
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
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
    WrongStratum,
)
from immunoguide.protocols import Protocol, load_protocol
from immunoguide.trial import audit
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
from immunoguide.trial.access import Actor, authorize
from immunoguide.trial.models import AllocationList, AllocationSlot, Patient

__all__ = [
    "CHECK_IDS",
    "DEFAULT_BLOCK_SIZES",
    "AllocationFiles",
    "ListCheck",
    "check_list_files",
    "generate_allocation_list",
    "import_allocation_list",
    "randomization_window",
    "randomize",
    "require_lists_verified",
    "startup_checks",
    "stratum_arms",
    "verify_allocation_lists",
]

FORMAT = "immunoguide.allocation/1"
GENERATOR = "sha256-counter-drbg/1 (rejection sampling, Fisher-Yates)"
CSV_HEADER = ("list", "site", "stratum", "seq", "block", "block_size", "arm")
#: The platform's block sizes when the protocol gives none (ImmunoSep: unknown, spec §4).
DEFAULT_BLOCK_SIZES: tuple[int, ...] = (2, 4, 6)

#: Stable ids of the list checks (clinicedc ``edc_randomization.W001``/``E002`` style).
CHECK_IDS: dict[str, str] = {
    "IG-RAND-E001": "the slots stored for a list no longer reproduce its content checksum (slot edited or deleted)",
    "IG-RAND-E002": "a list file differs from the list imported into the store, or from its checksum file",
    "IG-RAND-E003": "a free slot precedes a taken slot in a list (a slot was skipped)",
    "IG-RAND-E004": "a taken slot is inconsistent (no time/user, or patient of another site or stratum)",
    "IG-RAND-E005": "a randomised patient holds no slot",
    "IG-RAND-W001": "a list is nearly exhausted",
    "IG-RAND-W002": "stratification and block sizes are the platform's choice (unknown in the protocol)",
    "IG-RAND-W003": "no list file found to compare an imported list with",
    "IG-RAND-W004": "no allocation list imported yet",
}


# ---------------------------------------------------------------------------------------------------------------
# generation


class _Drbg:
    """Deterministic bits: SHA-256(key ‖ counter); the same seed gives the same list in any language."""

    def __init__(self, seed: int | str) -> None:
        self._key = hashlib.sha256(f"{FORMAT}\0{seed}".encode()).digest()
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


def stratum_arms(protocol: Protocol, stratum: str) -> dict[str, int]:
    """Arm code → allocation weight for one stratum (weights from the protocol's ratio by arm role).

    >>> stratum_arms(load_protocol("immunosep-2025"), "MALS")
    {'mals_anakinra': 1, 'mals_placebo': 1}
    """
    if stratum not in protocol.endotype_names:
        raise WrongStratum(expected=f"a stratum of {protocol.label}: {list(protocol.endotype_names)}", got=stratum,
                           where="allocation list", todo="strata are the protocol's endotypes")
    ratio = protocol.randomisation.ratio.value if protocol.randomisation and protocol.randomisation.ratio else None
    arms = [a for a in protocol.arms if stratum in a.endotypes]
    if ratio is None:
        raise InputError(expected="a protocol with an allocation ratio", got=protocol.label, where="[randomisation]",
                         todo="the protocol file must give [randomisation.ratio]")
    out: dict[str, int] = {}
    for a in arms:
        if a.role not in ratio:
            raise InputError(expected=f"a ratio weight for arm role {a.role}", got=ratio, where="[randomisation.ratio]",
                             todo="give a weight for every arm role")
        out[a.code] = int(ratio[a.role])
    roles = Counter(a.role for a in arms)
    if any(n != 1 for n in roles.values()) or len(out) < 2:
        raise InputError(expected="one arm per ratio role in the stratum", got={a.code: a.role for a in arms},
                         where=f"arms of stratum {stratum}", todo="check the protocol's arms")
    return out


@dataclass(frozen=True)
class AllocationFiles:
    """The files written by :func:`generate_allocation_list` and their checksums."""

    csv: Path
    meta: Path
    sha256: Path
    n_slots: int
    file_sha256: str
    content_sha256: str
    arm_counts: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (no arms per slot)."""
        return {"csv": str(self.csv), "meta": str(self.meta), "sha256": str(self.sha256), "n_slots": self.n_slots,
                "file_sha256": self.file_sha256, "content_sha256": self.content_sha256}


def _content_sha256(rows: Sequence[tuple[str, str, int, int, int, str]]) -> str:
    """Checksum over (site, stratum, seq, block, block_size, arm) in seq order — recomputable from the store."""
    h = hashlib.sha256()
    for site, stratum, seq, block, size, arm in sorted(rows, key=lambda r: r[2]):
        h.update(f"{site},{stratum},{seq},{block},{size},{arm}\n".encode())
    return h.hexdigest()


def _settings_choice(protocol: Protocol) -> tuple[dict[str, Any], list[str]]:
    used = protocol.resolve_settings()
    warnings = []
    for name in ("randomisation_stratification", "randomisation_block_size"):
        if name in protocol.settings and protocol.settings[name].confidence == "unknown":
            warnings.append(protocol.settings[name].warning)
    return {k: used[k] for k in ("randomisation_stratification", "randomisation_block_size") if k in used}, warnings


def generate_allocation_list(
    site: str,
    stratum: str,
    n: int,
    seed: int | str,
    block_sizes: Sequence[int] | None = None,
    *,
    out_dir: str | Path,
    protocol: str = DEFAULT_PROTOCOL,
    name: str | None = None,
) -> AllocationFiles:
    """Write an allocation list for one site and stratum: permuted blocks of random size, balanced per block.

    Parameters
    ----------
    site, stratum : str
        Site code and stratum (an endotype of the protocol: ``MALS`` or ``immunoparalysis``).
    n : int
        Minimum number of slots; whole blocks are generated until at least ``n`` slots exist.
    seed : int or str
        Seed of the deterministic generator (keep it secret with the list; only its SHA-256 is recorded).
    block_sizes : sequence of int, optional
        Block sizes drawn uniformly per block; each must be a multiple of the ratio's total (2 for 1:1).
        Default: the protocol's setting when it gives one, else :data:`DEFAULT_BLOCK_SIZES` (platform choice).
    out_dir : path
        Directory for ``allocation_<site>_<stratum>.csv``, ``.meta.json`` and ``.sha256``.
    protocol : str
        Protocol id (arms and ratio).

    Returns
    -------
    AllocationFiles
    """
    proto = load_protocol(protocol)
    weights = stratum_arms(proto, stratum)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InputError(expected="a number of slots >= 1", got=n, where="n", todo="give -n")
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
    rng = _Drbg(seed)
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
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for r in rows:
        w.writerow((list_name, *r))
    csv_bytes = buf.getvalue().encode()
    content = _content_sha256(rows)
    meta = {
        "format": FORMAT,
        "name": list_name,
        "protocol": proto.label,
        "protocol_sha256": proto.sha256,
        "site": site,
        "stratum": stratum,
        "n_requested": n,
        "n_slots": len(rows),
        "n_blocks": block,
        "block_sizes": list(sizes),
        "block_sizes_source": block_source,
        "ratio": weights,
        "generator": GENERATOR,
        "seed_sha256": hashlib.sha256(str(seed).encode()).hexdigest(),
        "content_sha256": content,
        "stratification": {
            "factors": ["site", "endotype"],
            "source": "platform",
            "protocol_settings": settings,
            "note": "Stratification factors and block design are unknown for this protocol (spec §4); one list per "
            "site and endotype stratum and the block sizes are the platform's choice.",
        },
        "warnings": warnings,
    }
    meta_bytes = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()
    csv_path, meta_path, sha_path = out / f"{stem}.csv", out / f"{stem}.meta.json", out / f"{stem}.sha256"
    csv_path.write_bytes(csv_bytes)
    meta_path.write_bytes(meta_bytes)
    file_sha = hashlib.sha256(csv_bytes).hexdigest()
    sha_path.write_text(f"{file_sha}  {csv_path.name}\n{hashlib.sha256(meta_bytes).hexdigest()}  {meta_path.name}\n")
    return AllocationFiles(csv_path, meta_path, sha_path, len(rows), file_sha, content,
                           dict(Counter(r[5] for r in rows)))


def _mismatch(got: Any, where: str, todo: str, expected: str = "an allocation list matching its checksums") -> AllocationListMismatch:
    return AllocationListMismatch(expected=expected, got=got, where=where, todo=todo)


def check_list_files(csv_path: str | Path) -> dict[str, Any]:
    """Verify a list's checksum file and content; return its metadata and rows (raises AllocationListMismatch).

    Checks: the ``.sha256`` file covers the CSV and the metadata and both match; the header; slots numbered
    1..n; one site, stratum and list name; every block complete, of its stated size and balanced to the ratio;
    the metadata's content checksum.
    """
    csv_path = Path(csv_path)
    stem = csv_path.name.removesuffix(".csv")
    sha_path, meta_path = csv_path.with_name(f"{stem}.sha256"), csv_path.with_name(f"{stem}.meta.json")
    for pth in (csv_path, sha_path, meta_path):
        if not pth.is_file():
            raise _mismatch(str(pth), "allocation list files", "keep the .csv, .meta.json and .sha256 together",
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
    if tuple(header) != CSV_HEADER:
        raise _mismatch(header, str(csv_path), f"the header must be {','.join(CSV_HEADER)}")
    rows: list[tuple[str, str, int, int, int, str]] = []
    names = set()
    for i, r in enumerate(raw, start=1):
        try:
            lname, site, stratum, seq, block, size, arm = r
            rows.append((site, stratum, int(seq), int(block), int(size), arm))
            names.add(lname)
        except ValueError:
            raise _mismatch(r, f"{csv_path.name} line {i + 1}", "each line has 7 fields with integer seq/block/size") from None
    if not rows or [r[2] for r in rows] != list(range(1, len(rows) + 1)):
        raise _mismatch("slot numbers not 1..n in order", str(csv_path), "regenerate the list")
    if len({(r[0], r[1]) for r in rows}) != 1 or len(names) != 1:
        raise _mismatch("several sites, strata or names in one list", str(csv_path), "one list per site and stratum")
    site, stratum = rows[0][0], rows[0][1]
    if (meta.get("site"), meta.get("stratum"), meta.get("name")) != (site, stratum, names.pop()):
        raise _mismatch("metadata and CSV disagree on site, stratum or name", str(meta_path), "regenerate the list")
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
            raise _mismatch(f"block {b}: {dict(counts)} in {len(members)} slots (size {bsize})", str(csv_path),
                            "every block must be complete and balanced to the ratio; regenerate the list")
    content = _content_sha256(rows)
    if meta.get("content_sha256") != content:
        raise _mismatch("content checksum differs from the metadata", str(meta_path), "regenerate the list")
    return {"meta": meta, "rows": rows, "file_sha256": hashlib.sha256(csv_bytes).hexdigest(), "content_sha256": content}


def import_allocation_list(
    session: Session, csv_path: str | Path, *, actor: Actor, now: datetime,
) -> dict[str, Any]:
    """Import a verified list (administrator): one list per site and stratum, every slot audited.

    Raises AllocationListMismatch (checksums, content, arms not of the protocol's stratum), DuplicateRecord
    (a list for the site and stratum, or of that name, is already imported), NotAuthorized.
    """
    authorize(actor, "import_allocation")
    aware(now, "now")
    checked = check_list_files(csv_path)
    meta, rows = checked["meta"], checked["rows"]
    proto = load_protocol(meta.get("protocol", DEFAULT_PROTOCOL))
    try:
        weights = stratum_arms(proto, meta["stratum"])
    except WrongStratum as exc:
        raise _mismatch(meta["stratum"], str(csv_path), "the stratum must be an endotype of the protocol") from exc
    if meta.get("ratio") != weights or any(r[5] not in weights for r in rows):
        raise _mismatch(f"arms {sorted({r[5] for r in rows})}, ratio {meta.get('ratio')}", str(csv_path),
                        f"the list must use the arms {weights} of stratum {meta['stratum']} in {proto.label}")
    dup = session.execute(select(AllocationList).where(
        (AllocationList.site == meta["site"]) & (AllocationList.stratum == meta["stratum"])
        | (AllocationList.name == meta["name"]))).scalar_one_or_none()
    if dup is not None:
        raise DuplicateRecord(expected="no list yet for this site and stratum", got=f"{dup.name} ({dup.site}, {dup.stratum})",
                              where="allocation_lists", todo="a list is imported once; it is never replaced")
    lst = AllocationList(
        name=meta["name"], site=meta["site"], stratum=meta["stratum"], protocol=proto.label, n_slots=len(rows),
        file_sha256=checked["file_sha256"], content_sha256=checked["content_sha256"], meta=meta, imported_at=now,
        imported_by=actor.user,
    )
    audit.insert(session, actor, now, lst)
    slots = [AllocationSlot(list_id=lst.id, seq=seq, block=block, block_size=size, arm=arm, patient_id=None,
                            allocated_at=None, allocated_by=None) for _, _, seq, block, size, arm in rows]
    audit.insert_many(session, actor, now, slots)
    return {"list": lst.name, "site": lst.site, "stratum": lst.stratum, "n_slots": lst.n_slots,
            "file_sha256": lst.file_sha256, "content_sha256": lst.content_sha256,
            "warnings": meta.get("warnings", [])}


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


def _slots_content(slots: Sequence[AllocationSlot], lst: AllocationList) -> str:
    return _content_sha256([(lst.site, lst.stratum, s.seq, s.block, s.block_size, s.arm) for s in slots])


def verify_allocation_lists(session: Session, *, list_dir: str | Path | None = None,
                            exhaustion_warning_fraction: float = 0.1) -> list[ListCheck]:
    """Check every imported list against its checksum, its file (when ``list_dir`` is given) and its use.

    Run at start-up (CLI ``allocation verify``, service start) and after load tests. Errors (``IG-RAND-E…``)
    must be resolved before randomising; warnings (``IG-RAND-W…``) are reported. See :data:`CHECK_IDS`.
    """
    out: list[ListCheck] = []
    lists = list(session.execute(select(AllocationList).order_by(AllocationList.id)).scalars())
    if not lists:
        out.append(ListCheck("IG-RAND-W004", "warning", "no allocation list imported yet: randomisation is not "
                             "possible (import one per site and stratum with `immunoguide trial allocation import`)"))
    files: dict[str, Path] = {}
    if list_dir is not None:
        for pth in Path(list_dir).glob("*.csv"):
            files[pth.name.removesuffix(".csv")] = pth
    for lst in lists:
        slots = list(session.execute(select(AllocationSlot).where(AllocationSlot.list_id == lst.id)
                                     .order_by(AllocationSlot.seq)).scalars())
        if len(slots) != lst.n_slots or _slots_content(slots, lst) != lst.content_sha256:
            out.append(ListCheck("IG-RAND-E001", "error",
                                 f"list {lst.name}: expected {lst.n_slots} slots with content sha256 {lst.content_sha256}; "
                                 f"the store holds {len(slots)} slots that do not reproduce it. Resolve this issue "
                                 "before randomising (restore the list from a backup).", lst.name))
        taken = [s for s in slots if s.patient_id is not None]
        if taken:
            last = max(s.seq for s in taken)
            free_before = [s.seq for s in slots if s.patient_id is None and s.seq < last]
            if free_before:
                out.append(ListCheck("IG-RAND-E003", "error",
                                     f"list {lst.name}: slot(s) {free_before[:10]} are free but slot {last} is taken "
                                     "(skipped slots); resolve before randomising.", lst.name))
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
        strat = lst.meta.get("stratification", {}) if isinstance(lst.meta, dict) else {}
        if strat.get("source") == "platform" or lst.meta.get("block_sizes_source") == "platform":
            out.append(ListCheck("IG-RAND-W002", "warning", f"list {lst.name}: {strat.get('note', CHECK_IDS['IG-RAND-W002'])}",
                                 lst.name))
        if list_dir is not None:
            stem = f"allocation_{lst.site}_{lst.stratum}"
            found = files.get(stem)
            if found is None:
                out.append(ListCheck("IG-RAND-W003", "warning", f"list {lst.name}: no file {stem}.csv in {list_dir}",
                                     lst.name))
            else:
                try:
                    checked = check_list_files(found)
                    if checked["file_sha256"] != lst.file_sha256 or checked["content_sha256"] != lst.content_sha256:
                        raise _mismatch("file differs from the imported list", str(found), "")
                except AllocationListMismatch as exc:
                    out.append(ListCheck("IG-RAND-E002", "error",
                                         f"list {lst.name}: expected {found} to match the imported list (sha256 "
                                         f"{lst.file_sha256}); got: {exc.got}. Resolve this issue before randomising.",
                                         lst.name))
    randomised = session.execute(
        select(Patient.code).where(Patient.status == "randomised", ~Patient.id.in_(
            select(AllocationSlot.patient_id).where(AllocationSlot.patient_id.is_not(None))))
    ).scalars().all()
    for code in randomised:
        out.append(ListCheck("IG-RAND-E005", "error", f"patient {code} is marked randomised but holds no slot"))
    return out


def require_lists_verified(session: Session, *, list_dir: str | Path | None = None) -> list[ListCheck]:
    """Run the start-up verification; raise AllocationListMismatch on any error-level finding."""
    checks = verify_allocation_lists(session, list_dir=list_dir)
    errors = [c for c in checks if c.level == "error"]
    if errors:
        raise _mismatch(f"{len(errors)} error(s); first {errors[0].id}: {errors[0].message}", "allocation lists",
                        "resolve the listed issues before randomising (`immunoguide trial allocation verify`)",
                        expected="allocation lists that verify against the store")
    return checks


def startup_checks(store: Any, *, list_dir: str | Path | None = None) -> list[ListCheck]:
    """What a service or command runs before it randomises: schema at head, then every list verified.

    Raises StoreError (schema) or AllocationListMismatch (an error-level finding); returns the warnings.
    """
    store.check_schema()
    with store.session() as s:
        return require_lists_verified(s, list_dir=list_dir)


# ---------------------------------------------------------------------------------------------------------------
# allocation


def randomization_window(protocol: Protocol) -> tuple[str, str, float, str] | None:
    """The protocol's window from the Sepsis-3 anchor to the first dose: (criterion id, comparator, hours, anchor)."""
    for c in protocol.inclusion:
        if c.kind == "window_from_anchor" and c.event == "first_dose" and c.comparator and c.hours is not None:
            return c.id, c.comparator, float(c.hours), str(c.anchor)
    return None


def _take_next_slot(session: Session, lst: AllocationList) -> AllocationSlot | None:
    """The lowest free slot of ``lst``, row-locked (``FOR UPDATE SKIP LOCKED`` on PostgreSQL)."""
    return session.execute(
        select(AllocationSlot)
        .where(AllocationSlot.list_id == lst.id, AllocationSlot.patient_id.is_(None))
        .order_by(AllocationSlot.seq)
        .limit(1)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


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
        The list's slots no longer match its checksum.
    """
    aware(now, "now")
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

    lst = session.execute(select(AllocationList).where(AllocationList.site == p.site,
                                                       AllocationList.stratum == p.stratum)).scalar_one_or_none()
    if lst is None:
        raise AllocationListUnavailable(expected=f"an imported allocation list for site {p.site}, stratum {p.stratum}",
                                        got=None, where="allocation_lists",
                                        todo="the administrator imports the list (`immunoguide trial allocation import`)")
    slots_content = session.execute(
        select(AllocationSlot.seq, AllocationSlot.block, AllocationSlot.block_size, AllocationSlot.arm)
        .where(AllocationSlot.list_id == lst.id)
    ).all()
    if len(slots_content) != lst.n_slots or _content_sha256(
        [(lst.site, lst.stratum, s, b, z, a) for s, b, z, a in slots_content]
    ) != lst.content_sha256:
        raise _mismatch(f"list {lst.name}: stored slots do not reproduce content sha256 {lst.content_sha256}",
                        "allocation_slots", "stop randomising at this site and run `immunoguide trial allocation verify`")
    result = evaluate_now(session, p, now, planned_first_dose=now, consent=consent, classification=cl)
    require_eligible(result, p.code)
    list_arms = sorted(stratum_arms(proto, lst.stratum))
    if not set(list_arms) <= set(result.allowed_arms):
        # checked before any slot is looked at, so the refusal reveals nothing about the next allocation
        raise NotEligible(expected=f"a patient open to every arm of the stratum's list {list_arms}",
                          got=list(result.allowed_arms), where=f"{p.code} (overlay)",
                          todo="an overlay (e.g. COVID-19: MALS arms only) closes an arm of this stratum")
    # Nothing is written before the slot is taken; the audit head is locked only at commit.
    slot = _take_next_slot(session, lst)
    if slot is None:
        raise AllocationListUnavailable(expected=f"a free slot in list {lst.name}", got=f"all {lst.n_slots} slots taken",
                                        where="allocation_slots", todo="import the next list for this site and stratum")
    store_evaluation(session, p, actor, now, "randomisation", result)
    audit.update(session, actor, now, slot, patient_id=p.id, allocated_at=now, allocated_by=actor.user)
    audit.update(session, actor, now, p, status="randomised")
    from immunoguide.trial.access import randomization_view
    from immunoguide.trial.kits import assign_kits

    kits = assign_kits(session, actor, now, p, proto, lst, slot)
    return randomization_view(session, p, actor, slot=slot, allocation_list=lst, kits=kits)
