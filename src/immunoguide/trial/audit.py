"""The append-only, hash-chained audit trail of every write to the trial store, and its verifier.

Every row of the audited tables (:data:`~immunoguide.trial.models.AUDITED_TABLES`) is created, changed and
deleted through :func:`insert`, :func:`update` and :func:`delete`, which record who (user and role), when, what
(table, row id, patient) and the row before and after the change. A guard on the session refuses to flush any
change to an audited table that did not go through them, so nothing bypasses the audit from the ORM.

The chain
---------
Audit entry ``n`` stores ``payload`` = ``{"before": …, "after": …}`` (canonical JSON: sorted keys, UTC ISO
times), ``payload_sha256`` = SHA-256 of that JSON, and

``hash_n = sha256(hash_{n-1} + canonical_json({seq, at, actor, role, action, table, row_id, patient_id,
payload_sha256}))``

with ``hash_0`` = 64 zeros; the header also holds ``system_at`` (the system clock when the entry was chained, see
:mod:`immunoguide.trial.clock`) and ``reason`` (why) when they are set (entries written before revision 0003 have
neither, and their hashes are unchanged). Each entry carries ``mac`` = HMAC-SHA-256 of its hash under the *audit*
sub-key of the trial key, which is kept outside the database (:mod:`immunoguide.trial.keys`): anyone can recompute
the hashes, but only the key holder can recompute the MACs, so a database administrator who edits a row and
re-hashes the chain is caught by a keyed verification. The tip (``seq``, ``hash``, ``mac``) is kept in
``audit_head``. A transaction queues its entries and chains them when it commits (:func:`chain_pending`): it
flushes its data changes, locks the head (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite transactions are
serialised by ``BEGIN IMMEDIATE``), reads the system clock, checks every event time against it on a real store,
numbers, hashes and MACs its entries and moves the head, so the chain never forks, the system times never
decrease, and the head is held only for those last writes.

A chain that verifies with the key can still be rolled back to an earlier state of itself by someone who kept a
copy of the database; :func:`checkpoint` exports a MAC'd checkpoint (sequence number, hash, system time) to a file
kept outside the database (the trial master file), and ``verify_audit(checkpoints=…)`` proves that nothing up to
each checkpoint has changed and that the chain still reaches it.

Because the chain hashes the *hash* of the payload, a payload can be removed without breaking the chain: this
is how a withdrawal with data removal erases a patient's clinical data from the trail too (:func:`redact`). The
removal is itself an audit entry listing the redacted entries, and the verifier accepts a missing payload only
when such an entry covers it.

Verification (:func:`verify_audit`) walks the chain, recomputes every hash and payload hash, checks the head,
then replays the trail (the last ``after`` image of every row) and compares it with every row of every audited
table, so an edit, insertion or deletion behind the audit's back — in the trail or in a data table — is
reported. Issue ids are stable:

========== ===================================================================================
IG-AUD-E001 an entry's ``prev_hash`` is not the previous entry's hash (link broken)
IG-AUD-E002 an entry's hash does not match its content (entry edited)
IG-AUD-E003 an entry's payload does not match its ``payload_sha256`` (payload edited)
IG-AUD-E004 entries are missing from the sequence (entries deleted)
IG-AUD-E005 the head does not match the last entry (entries deleted at the end, or head edited)
IG-AUD-E006 a payload is missing without a recorded redaction covering it
IG-AUD-E007 a data row has no audit entry (inserted behind the audit's back)
IG-AUD-E008 a data row differs from its last audited image (edited behind the audit's back)
IG-AUD-E009 a row the trail says exists is missing (deleted behind the audit's back)
IG-AUD-E010 a row the trail says was deleted is present (re-inserted behind the audit's back)
IG-AUD-E011 an entry's MAC is missing or wrong (hash recomputed without the trial key: forged)
IG-AUD-E012 the head's MAC is wrong (head moved without the trial key)
IG-AUD-E013 the store configuration does not match its MAC (mode, key id or keyed range edited)
IG-AUD-E014 the system time decreases along the chain (entries inserted or re-ordered)
IG-AUD-E015 an entry of the keyed range has no system time
IG-AUD-E016 on a real store, an entry's event time differs from its system time beyond the tolerance
IG-AUD-E017 a checkpoint's MAC is wrong (edited, or a checkpoint of another store)
IG-AUD-E018 the chain no longer holds a checkpoint's entry (history rewritten, or entries after it removed)
========== ===================================================================================

Rows of ``service_users`` (accounts) are replayed and compared the same way: creating an account, changing its
role, site, password or state goes through :mod:`immunoguide.trial.accounts`, so promoting an account to
``dsmb`` in SQL is reported (IG-AUD-E008) and refused at login.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, bindparam, event, inspect, select
from sqlalchemy import insert as sql_insert
from sqlalchemy import update as sql_update
from sqlalchemy.orm import Session

from immunoguide.errors import AuditChainBroken, ImplausibleTime, TrialKeyError
from immunoguide.trial import clock
from immunoguide.trial._authz import Actor
from immunoguide.trial.keys import TrialKey
from immunoguide.trial.models import AUDITED_TABLES, AuditHead, AuditRecord, Base

__all__ = [
    "GENESIS_HASH",
    "QueuedEntry",
    "append",
    "AuditIssue",
    "AuditReport",
    "canonical_json",
    "chain_pending",
    "checkpoint",
    "delete",
    "entry_hash",
    "head_seq",
    "install_guard",
    "insert",
    "insert_each",
    "insert_many",
    "redact",
    "require_intact",
    "reasoned",
    "row_image",
    "savepoint",
    "set_reason",
    "update",
    "verify_audit",
]

GENESIS_HASH = "0" * 64
_MODELS = {m.__tablename__: m for m in AUDITED_TABLES}
_OK_KEY = "_immunoguide_audit_ok"
_HEAD_KEY = "_immunoguide_audit_head"
_PENDING_KEY = "_immunoguide_audit_pending"
_REASON_KEY = "_immunoguide_audit_reason"
CHECKPOINT_FORMAT = "immunoguide.audit-checkpoint/1"


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat()
    return value


def canonical_json(obj: Any) -> str:
    """Sorted keys, no spaces, UTC ISO times, NaN refused: the bytes every hash is taken over.

    >>> canonical_json({"b": 1, "a": [1.5, None]})
    '{"a":[1.5,null],"b":1}'
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                      default=_jsonable)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def row_image(obj: Base) -> dict[str, Any]:
    """Every column of a mapped row as canonical JSON values (what the trail records and replays)."""
    out: dict[str, Any] = {}
    for col in obj.__table__.columns:
        v = getattr(obj, col.key)
        if isinstance(col.type, JSON) and v is not None:
            v = json.loads(canonical_json(v))
        out[col.key] = _jsonable(v)
    return out


def _row_id(obj: Base) -> str:
    ident = inspect(obj).identity
    return ",".join(str(i) for i in ident) if ident else ""


def _patient_of(obj: Base) -> int | None:
    from immunoguide.trial.models import Patient

    if isinstance(obj, Patient):
        return obj.id
    return getattr(obj, "patient_id", None)


def entry_hash(prev_hash: str, header: Mapping[str, Any]) -> str:
    """``sha256(prev_hash + canonical_json(header))`` (hex)."""
    return _sha256(prev_hash + canonical_json(header))


def _header(r: Any) -> dict[str, Any]:
    """The hashed header of an entry (an AuditRecord, or a plain row of audit_log: the same attributes)."""
    out = {
        "seq": r.seq,
        "at": _jsonable(r.at),
        "actor": r.actor,
        "role": r.role,
        "action": r.action,
        "table": r.table_name,
        "row_id": r.row_id,
        "patient_id": r.patient_id,
        "payload_sha256": r.payload_sha256,
    }
    if r.system_at is not None:
        out["system_at"] = _jsonable(r.system_at)
    if r.reason is not None:
        out["reason"] = r.reason
    return out


def entry_mac(key: TrialKey, hash_: str) -> str:
    """The MAC of an entry (over its hash, which covers its content and everything before it)."""
    return key.mac("audit", ["entry", hash_])


def head_mac(key: TrialKey, seq: int, hash_: str) -> str:
    """The MAC of the chain head."""
    return key.mac("audit", ["head", seq, hash_])


class _Head:
    """The chain tip as locked by this transaction; written back once, just before the commit."""

    __slots__ = ("txn", "seq", "hash", "mac", "dirty")

    def __init__(self, txn: Any, seq: int, hash_: str, mac: str | None) -> None:
        self.txn, self.seq, self.hash, self.mac, self.dirty = txn, seq, hash_, mac, False


# The head's statements, run at every commit, built once (building one costs as much as running it on SQLite).
_LOCK_HEAD = select(AuditHead.seq, AuditHead.hash, AuditHead.mac).where(AuditHead.id == 1).with_for_update()
_MOVE_HEAD = (sql_update(AuditHead).where(AuditHead.id == 1)
              .values(seq=bindparam("head_seq"), hash=bindparam("head_hash"), mac=bindparam("head_mac"))
              .execution_options(synchronize_session=False))


def _locked_head(session: Session) -> _Head:
    cached = session.info.get(_HEAD_KEY)
    txn = session.get_transaction()
    if cached is not None and cached.txn is txn:
        return cached
    row = session.execute(_LOCK_HEAD).one()
    head = _Head(txn, row.seq, row.hash, row.mac)
    session.info[_HEAD_KEY] = head
    return head


def _write_head(session: Session) -> None:
    head = session.info.get(_HEAD_KEY)
    if head is not None and head.dirty and head.txn is session.get_transaction():
        session.execute(_MOVE_HEAD, {"head_seq": head.seq, "head_hash": head.hash, "head_mac": head.mac})
        head.dirty = False


def set_reason(session: Session, reason: str | None) -> None:
    """Record ``reason`` (why: a correction, a late entry …) on every entry this transaction appends from now on."""
    if reason is not None and (not isinstance(reason, str) or not reason.strip()):
        reason = None
    session.info[_REASON_KEY] = (session.get_transaction(), reason.strip() if reason else None)


@contextmanager
def reasoned(session: Session, reason: str | None) -> Iterator[None]:
    """Within the block, entries get ``reason`` (when it is not None); the transaction's reason is restored after."""
    if reason is None:
        yield
        return
    prev = session.info.get(_REASON_KEY)
    set_reason(session, reason)
    try:
        yield
    finally:
        if prev is None:
            session.info.pop(_REASON_KEY, None)
        else:
            session.info[_REASON_KEY] = prev


@contextmanager
def savepoint(session: Session) -> Iterator[None]:
    """A SAVEPOINT for audited writes: when the block raises, its data changes *and* its audit entries are undone.

    Entries are queued per transaction and chained at commit (:func:`chain_pending`), so a bare
    ``session.begin_nested()`` rolled back would leave the entries of the undone changes queued, and a later commit
    would chain them. Here the queue (and the chain head, when the block chained entries early, e.g. through
    :func:`head_seq`) is restored to what it was before the block; the exception propagates.
    """
    txn = session.get_transaction()
    pending = session.info.get(_PENDING_KEY)
    queued = list(pending[1]) if pending is not None and pending[0] is txn else []
    head = session.info.get(_HEAD_KEY)
    head_state = (head.seq, head.hash, head.mac, head.dirty) if head is not None and head.txn is txn else None
    try:
        with session.begin_nested():
            yield
    except BaseException:
        session.info[_PENDING_KEY] = (txn, queued)
        clock.forget_trial_start(session)  # read inside the block, it may count an allocation list undone with it
        head = session.info.get(_HEAD_KEY)
        if head_state is None:
            session.info.pop(_HEAD_KEY, None)  # a lock taken inside the savepoint is released with it
        elif head is not None and head.txn is txn:
            head.seq, head.hash, head.mac, head.dirty = head_state
        raise


@dataclass(slots=True)
class QueuedEntry:
    """An audit entry queued by :func:`append`: the columns of its ``audit_log`` row (a plain object, not a mapped
    row: it is inserted by one multi-row INSERT when the transaction is chained, :func:`chain_pending`, which sets
    ``seq``, ``prev_hash``, ``system_at``, ``hash`` and ``mac``)."""

    seq: int | None
    at: datetime
    actor: str
    role: str
    action: str
    table_name: str
    row_id: str | None
    patient_id: int | None
    payload: dict[str, Any] | None
    payload_sha256: str
    prev_hash: str
    hash: str
    redacted_by: int | None
    system_at: datetime | None
    reason: str | None
    mac: str | None

    def row(self) -> dict[str, Any]:
        """The ``audit_log`` row (column → value)."""
        return {c.key: getattr(self, c.key) for c in AuditRecord.__table__.columns}


def _current_reason(session: Session) -> str | None:
    cur = session.info.get(_REASON_KEY)
    if cur is not None and cur[0] is session.get_transaction():
        return cur[1]  # type: ignore[no-any-return]
    return None


def append(
    session: Session,
    actor: Actor,
    now: datetime,
    *,
    action: str,
    table: str,
    row_id: str | None,
    patient_id: int | None,
    payload: Mapping[str, Any] | None,
    reason: str | None = None,
) -> QueuedEntry:
    """Queue one entry; it is chained (sequence number, system time, hash and MAC) when the transaction commits.

    Chaining at commit keeps the chain head locked only for the final writes of a transaction, so concurrent
    transactions (PostgreSQL) do their work in parallel and serialise only there. ``reason`` (else the one set by
    :func:`set_reason` for the transaction) is the *why* of the change.
    """
    payload_text = canonical_json(payload)  # canonical JSON is idempotent: loads + dumps gives the same text
    payload_json = json.loads(payload_text) if payload is not None else None
    rec = QueuedEntry(
        seq=None, at=now, actor=actor.user, role=actor.role, action=action, table_name=table, row_id=row_id,
        patient_id=patient_id, payload=payload_json, payload_sha256=_sha256(payload_text), prev_hash="", hash="",
        redacted_by=None, system_at=None, reason=reason or _current_reason(session), mac=None,
    )
    txn = session.get_transaction()
    pending: tuple[Any, list[QueuedEntry]] | None = session.info.get(_PENDING_KEY)
    if pending is None or pending[0] is not txn:
        pending = (txn, [])
        session.info[_PENDING_KEY] = pending
    pending[1].append(rec)
    return rec


def chain_pending(session: Session) -> None:
    """Write the data changes, lock the chain head and chain every queued entry (called before each commit).

    The head lock is taken after every data change of the transaction has been flushed, and nothing but the
    new audit entries and the head are written after it, so it can never take part in a deadlock.
    """
    pending = session.info.get(_PENDING_KEY)
    if pending is None or pending[0] is not session.get_transaction() or not pending[1]:
        return
    session.flush()
    head = _locked_head(session)
    system_at = clock.system_now(session)  # after the head lock: never decreases along the chain
    cfg = clock.store_config(session)
    key = clock.session_key(session)
    if cfg is not None and key is None:
        raise TrialKeyError(expected="the trial key to write to this store (every audit entry is MAC'd)", got=None,
                            where="environment", todo="export IMMUNOGUIDE_TRIAL_KEY_FILE=/path/to/trial.key")
    if cfg is not None and cfg.mode == "real":
        for rec in pending[1]:
            delta = (rec.at - system_at).total_seconds()
            if abs(delta) > cfg.clock_tolerance_s:
                raise ImplausibleTime(
                    expected=f"an event time within {cfg.clock_tolerance_s} s of the system clock "
                             f"({system_at.isoformat()})", got=f"{_jsonable(rec.at)} ({delta:+.0f} s)",
                    where=f"audit entry {rec.action} {rec.table_name} (real store)",
                    todo="on a real store times come from the system clock; --now works only on a simulation store")
    rows = []
    for rec in pending[1]:
        rec.seq = head.seq + 1
        rec.prev_hash = head.hash
        rec.system_at = system_at
        rec.hash = entry_hash(head.hash, _header(rec))
        rec.mac = entry_mac(key, rec.hash) if key is not None else None
        rows.append(rec.row())
        head.seq, head.hash, head.dirty = rec.seq, rec.hash, True
    head.mac = head_mac(key, head.seq, head.hash) if key is not None else None  # the head's MAC: of its last move
    pending[1].clear()
    session.execute(sql_insert(Base.metadata.tables[AuditRecord.__tablename__]), rows)  # one multi-row INSERT; the entries stay transient
    _write_head(session)


def _bless(session: Session, objs: Iterable[Base]) -> None:
    """Mark rows whose pending change was recorded here (the guard lets exactly these through the next flush)."""
    session.info.setdefault(_OK_KEY, set()).update(id(o) for o in objs)


def insert(session: Session, actor: Actor, now: datetime, obj: Base) -> Base:
    """Add ``obj`` and record its image (before = None)."""
    return insert_many(session, actor, now, [obj])[0]


def insert_many(session: Session, actor: Actor, now: datetime, objs: Sequence[Base]) -> Sequence[Base]:
    """Add several rows in one flush (which assigns their ids) and record one entry per row."""
    insert_each(session, actor, [(obj, now, None) for obj in objs])
    return objs


def insert_each(session: Session, actor: Actor, rows: Sequence[tuple[Base, datetime, str | None]]) -> None:
    """Add several rows in one flush and record one entry per row, in order, each at its own ``now`` and with its
    own ``reason`` (None: the transaction's, as :func:`reasoned` gives): the entries :func:`insert` would record
    for each row in turn, for rows that are written together."""
    objs = [obj for obj, _, _ in rows]
    session.add_all(objs)
    _bless(session, objs)
    session.flush()
    for obj, now, reason in rows:
        append(
            session, actor, now, action="insert", table=obj.__tablename__, row_id=_row_id(obj),
            patient_id=_patient_of(obj), payload={"before": None, "after": row_image(obj)}, reason=reason,
        )


def update(session: Session, actor: Actor, now: datetime, obj: Base, *, redact_before: bool = False,
           **changes: Any) -> bool:
    """Set ``changes`` on ``obj`` and record before/after; returns False (and records nothing) when no value changes.

    The row is written by the next flush (at the latest, the commit). ``redact_before`` records the before image
    as ``{"redacted": true}`` (used when data are removed).
    """
    before = row_image(obj)
    for k, v in changes.items():
        if k not in obj.__table__.columns:
            raise AttributeError(f"{obj.__tablename__} has no column {k}")
        setattr(obj, k, v)
    after = row_image(obj)
    if after == before:
        return False
    _bless(session, [obj])
    append(
        session, actor, now, action="update", table=obj.__tablename__, row_id=_row_id(obj),
        patient_id=_patient_of(obj), payload={"before": {"redacted": True} if redact_before else before, "after": after},
    )
    return True


def delete(session: Session, actor: Actor, now: datetime, obj: Base, *, redact_before: bool = False) -> None:
    """Delete ``obj`` and record its last image (``redact_before``: record ``{"redacted": true}`` instead)."""
    before = {"redacted": True} if redact_before else row_image(obj)
    row_id, table, patient = _row_id(obj), obj.__tablename__, _patient_of(obj)
    session.delete(obj)
    _bless(session, [obj])
    append(session, actor, now, action="delete", table=table, row_id=row_id, patient_id=patient,
           payload={"before": before, "after": None})


def head_seq(session: Session) -> int:
    """The sequence number of the last entry, queued entries chained first (locks the head until the commit)."""
    chain_pending(session)
    return _locked_head(session).seq


def redact(session: Session, actor: Actor, now: datetime, *, patient_id: int | None, tables: Iterable[str],
           reason: str, up_to_seq: int, rows: Iterable[tuple[str, str]] | None = None) -> int:
    """Remove the payloads of the patient's entries for ``tables`` up to ``up_to_seq`` (with ``rows``: only the
    entries of these (table, row id) pairs); the removal is itself an entry listing them.

    Returns the number of entries redacted. The chain stays verifiable (it hashes payload hashes).
    """
    tables = sorted(set(tables))
    chain_pending(session)
    stmt = (select(AuditRecord.seq)
            .where(AuditRecord.table_name.in_(tables), AuditRecord.payload.is_not(None), AuditRecord.seq <= up_to_seq)
            .order_by(AuditRecord.seq))
    if patient_id is not None:
        stmt = stmt.where(AuditRecord.patient_id == patient_id)
    seqs = list(session.execute(stmt).scalars())
    if rows is not None:
        wanted = set(rows)
        found = {q: (t, r) for q, t, r in session.execute(
            select(AuditRecord.seq, AuditRecord.table_name, AuditRecord.row_id).where(AuditRecord.seq.in_(seqs)))} if seqs else {}
        seqs = [q for q in seqs if found.get(q) in wanted]
    rec = append(session, actor, now, action="redact", table="audit_log", row_id=None, patient_id=patient_id,
                 payload={"reason": reason, "tables": tables, "seqs": seqs})
    chain_pending(session)
    if seqs:
        # the only change ever made to existing audit entries (payload removed, hash kept)
        for i in range(0, len(seqs), 500):
            session.execute(
                sql_update(AuditRecord)
                .where(AuditRecord.seq.in_(seqs[i : i + 500]))
                .values(payload=None, redacted_by=rec.seq)
                .execution_options(synchronize_session=False)
            )
        for obj in list(session.identity_map.values()):
            if isinstance(obj, AuditRecord) and obj.seq in set(seqs):
                session.expire(obj)
    return len(seqs)


def install_guard(session_factory: Any) -> None:
    """Refuse to flush a change to an audited table that did not go through this module; write the chain head
    once per transaction, just before the commit."""

    @event.listens_for(session_factory, "before_flush")
    def _guard(session: Session, _ctx: Any, _instances: Any) -> None:
        ok = session.info.get(_OK_KEY, set())
        audited = tuple(AUDITED_TABLES)
        for obj in list(session.new) + list(session.deleted) + [o for o in session.dirty if session.is_modified(o)]:
            if isinstance(obj, audited) and id(obj) not in ok:
                raise RuntimeError(
                    f"unaudited write to {obj.__tablename__}: every write to the trial store goes through "
                    "immunoguide.trial.audit (insert/update/delete)"
                )

    @event.listens_for(session_factory, "after_flush_postexec")
    def _flushed(session: Session, _ctx: Any) -> None:
        session.info.pop(_OK_KEY, None)

    @event.listens_for(session_factory, "before_commit")
    def _head(session: Session) -> None:
        chain_pending(session)
        _write_head(session)

    @event.listens_for(session_factory, "after_transaction_end")
    def _forget(session: Session, transaction: Any) -> None:
        if transaction.parent is None:
            session.info.pop(_OK_KEY, None)
            pending = session.info.get(_PENDING_KEY)
            if pending is not None and pending[0] is transaction:
                session.info.pop(_PENDING_KEY, None)
        head = session.info.get(_HEAD_KEY)
        if head is not None and head.txn is transaction:
            session.info.pop(_HEAD_KEY, None)
        reason = session.info.get(_REASON_KEY)
        if reason is not None and reason[0] is transaction:
            session.info.pop(_REASON_KEY, None)


# ---------------------------------------------------------------------------------------------------------------
# verification


@dataclass(frozen=True)
class AuditIssue:
    """One problem found by :func:`verify_audit` (``id`` is stable, see the module docstring)."""

    id: str
    message: str
    seq: int | None = None
    table: str | None = None
    row_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {"id": self.id, "message": self.message, "seq": self.seq, "table": self.table, "row_id": self.row_id}


@dataclass(frozen=True)
class AuditReport:
    """The result of :func:`verify_audit`: ``ok`` when no issue was found; ``keyed`` when the MACs were checked."""

    entries: int
    head_seq: int
    head_hash: str
    rows_checked: int
    issues: tuple[AuditIssue, ...] = field(default=())
    keyed: bool = False
    checkpoints: tuple[dict[str, Any], ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when the chain and every audited table verify."""
        return not self.issues

    @property
    def first_broken(self) -> AuditIssue | None:
        """The first issue of the chain walk (lowest sequence number), else the first data issue."""
        chain = [i for i in self.issues if i.seq is not None]
        return min(chain, key=lambda i: i.seq or 0) if chain else (self.issues[0] if self.issues else None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "ok": self.ok,
            "keyed": self.keyed,
            "entries": self.entries,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "rows_checked": self.rows_checked,
            "checkpoints": list(self.checkpoints),
            "first_broken": self.first_broken.to_dict() if self.first_broken else None,
            "issues": [i.to_dict() for i in self.issues],
            **({} if self.keyed else {"note": "MACs not checked: no trial key in this process (only unkeyed hashes "
                                             "were verified; a forger who re-hashes the chain is not caught)"}),
        }


_REDACTED = object()


def _same_image(img: Mapping[str, Any], exp: Mapping[str, Any]) -> list[str]:
    """Columns where a row differs from its audited image; a column added by a later revision (absent from the
    image) counts as equal while it is NULL."""
    return sorted(k for k in set(img) | set(exp)
                  if img.get(k) != exp.get(k) and not (k not in exp and img.get(k) is None))


def _stored_images(session: Session, model: type[Base]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(row id, image) of every row of an audited table as it is stored: what :func:`_row_id` and :func:`row_image`
    give for the row's ORM object, read as plain rows (the columns' types convert the values the same way)."""
    table = model.__table__
    cols = list(table.columns)
    json_cols = {c.key for c in cols if isinstance(c.type, JSON)}
    pk = list(inspect(model).primary_key)
    for row in session.execute(select(table)):
        m = row._mapping
        img: dict[str, Any] = {}
        for col in cols:
            v = m[col]
            if col.key in json_cols and v is not None:
                v = json.loads(canonical_json(v))
            img[col.key] = _jsonable(v)
        yield ",".join(str(m[c]) for c in pk), img


def _aware(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def verify_audit(session: Session, *, key: TrialKey | None = None, checkpoints: Sequence[Mapping[str, Any]] = (),
                 max_issues: int = 200) -> AuditReport:
    """Walk the chain, check the head, replay the trail and compare it with every audited table and the accounts.

    Parameters
    ----------
    session : Session
        A session on the store (read only).
    key : TrialKey, optional
        The trial key; default the session's. With a key every MAC is checked (entries of the keyed range, the
        head, the store configuration, checkpoints); without one only the unkeyed hashes are (``keyed`` False).
    checkpoints : sequence of mapping
        Checkpoints written by :func:`checkpoint` (e.g. read from the files of the trial master file).
    max_issues : int
        Stop collecting after this many issues (the first ones are the most useful).

    Returns
    -------
    AuditReport
    """
    from immunoguide.trial._account_image import ACCOUNT_TABLE, account_images

    chain_pending(session)
    _write_head(session)
    key = key or clock.session_key(session)
    issues: list[AuditIssue] = []

    def add(issue: AuditIssue) -> None:
        if len(issues) < max_issues:
            issues.append(issue)

    from immunoguide.trial.models import StoreConfig

    cfg = session.execute(select(StoreConfig).where(StoreConfig.id == 1)
                          .execution_options(populate_existing=True)).scalar_one_or_none()
    keyed_from = cfg.keyed_from_seq if cfg is not None else None
    if cfg is not None and key is not None:
        if key.key_id != cfg.key_id:
            raise TrialKeyError(expected=f"the trial key of this store (key id {cfg.key_id})",
                                got=f"key id {key.key_id}", where="audit verify",
                                todo="verify with the key the store was initialised with")
        if not key.check("config", clock.config_image(cfg), cfg.mac):
            add(AuditIssue("IG-AUD-E013", "the store configuration does not match its MAC (mode, key id, clock "
                                          "tolerance or keyed range edited in the database)", None, "store_config"))
    tolerance = cfg.clock_tolerance_s if cfg is not None and cfg.mode == "real" else None

    prev_hash, expected_seq, n = GENESIS_HASH, 1, 0
    last_system: datetime | None = None
    hashes: dict[int, str] = {}
    wanted = {int(c.get("seq", -1)) for c in checkpoints}
    state: dict[tuple[str, str], Any] = {}
    redactions: dict[int, tuple[int | None, set[int]]] = {}
    pending_redacted: list[Any] = []
    # plain rows of the columns (the same values the ORM objects hold; building objects was most of the walk)
    trail = AuditRecord.__table__
    for r in session.execute(select(trail).order_by(trail.c.seq)):
        n += 1
        if r.seq != expected_seq:
            add(AuditIssue("IG-AUD-E004", f"audit entries {expected_seq}..{r.seq - 1} are missing (deleted)", r.seq))
        if r.prev_hash != prev_hash:
            add(AuditIssue("IG-AUD-E001", f"entry {r.seq} does not link to the entry before it (chain broken)", r.seq))
        if entry_hash(r.prev_hash, _header(r)) != r.hash:
            add(AuditIssue("IG-AUD-E002", f"entry {r.seq} does not match its hash (edited)", r.seq, r.table_name,
                           r.row_id))
        in_keyed = keyed_from is not None and r.seq >= keyed_from
        if key is not None and in_keyed and (r.mac is None or not hmac_equal(entry_mac(key, r.hash), r.mac)):
            add(AuditIssue("IG-AUD-E011", f"entry {r.seq}: its MAC is {'missing' if r.mac is None else 'wrong'} "
                                          "(re-hashed or written without the trial key: forged)", r.seq,
                           r.table_name, r.row_id))
        sys_t = _aware(r.system_at)
        if sys_t is None and in_keyed:
            add(AuditIssue("IG-AUD-E015", f"entry {r.seq} has no system time", r.seq, r.table_name, r.row_id))
        if sys_t is not None:
            if last_system is not None and sys_t < last_system:
                add(AuditIssue("IG-AUD-E014", f"entry {r.seq}: system time {sys_t.isoformat()} is before the "
                                              f"previous entry's ({last_system.isoformat()})", r.seq))
            last_system = sys_t
            at = _aware(r.at)
            if tolerance is not None and at is not None and abs((at - sys_t).total_seconds()) > tolerance:
                add(AuditIssue("IG-AUD-E016", f"entry {r.seq}: event time {at.isoformat()} differs from the "
                                              f"system time {sys_t.isoformat()} by more than {tolerance} s",
                               r.seq, r.table_name, r.row_id))
        if r.seq in wanted:
            hashes[r.seq] = r.hash
        if r.payload is None:
            pending_redacted.append(r)
        elif _sha256(canonical_json(r.payload)) != r.payload_sha256:
            add(AuditIssue("IG-AUD-E003", f"entry {r.seq}: payload does not match its SHA-256 (edited)", r.seq,
                           r.table_name, r.row_id))
        if r.action == "redact" and r.payload is not None:
            redactions[r.seq] = (r.patient_id, set(r.payload.get("seqs", [])))
        if r.action in ("insert", "update", "delete") and (r.table_name in _MODELS or r.table_name == ACCOUNT_TABLE):
            key_ = (r.table_name, r.row_id or "")
            if r.action == "delete":
                state[key_] = None
            elif r.payload is None:
                state[key_] = _REDACTED
            else:
                state[key_] = r.payload.get("after")
        prev_hash, expected_seq = r.hash, r.seq + 1
    for r in pending_redacted:
        red = redactions.get(r.redacted_by or -1)
        if red is None or (red[0] is not None and red[0] != r.patient_id) or r.seq not in red[1]:
            add(AuditIssue("IG-AUD-E006", f"entry {r.seq}: payload removed without a redaction entry covering it",
                           r.seq, r.table_name, r.row_id))
    head = session.execute(select(AuditHead).where(AuditHead.id == 1)
                           .execution_options(populate_existing=True)).scalar_one_or_none()
    if head is None or head.seq != expected_seq - 1 or head.hash != prev_hash:
        add(AuditIssue(
            "IG-AUD-E005",
            f"the chain head ({None if head is None else head.seq}) does not match the last entry ({expected_seq - 1}):"
            " entries deleted at the end, or the head edited",
            expected_seq - 1,
        ))
    elif key is not None and keyed_from is not None and head.seq >= keyed_from and (
            head.mac is None or not hmac_equal(head_mac(key, head.seq, head.hash), head.mac)):
        add(AuditIssue("IG-AUD-E012", "the chain head's MAC is wrong (moved without the trial key)", head.seq))
    checked: list[dict[str, Any]] = []
    for c in checkpoints:
        body = {k: v for k, v in c.items() if k != "mac"}
        seq = int(c.get("seq", -1))
        if key is not None and not key.check("checkpoint", body, c.get("mac")):
            add(AuditIssue("IG-AUD-E017", f"checkpoint at entry {seq}: its MAC is wrong (edited, or another store's)",
                           seq))
        elif hashes.get(seq) != c.get("hash"):
            add(AuditIssue("IG-AUD-E018", f"checkpoint at entry {seq} ({c.get('system_at')}): the chain "
                                          f"{'has no such entry' if seq not in hashes else 'holds another hash there'}"
                                          " — history before the checkpoint was rewritten, or entries after it "
                                          "were removed", seq))
        checked.append({"seq": seq, "hash": c.get("hash"), "system_at": c.get("system_at"),
                        "held": hashes.get(seq) == c.get("hash")})
    rows = 0
    seen: set[tuple[str, str]] = set()
    images: list[tuple[str, str, dict[str, Any]]] = []
    for model in AUDITED_TABLES:
        images.extend((model.__tablename__, row_id, img) for row_id, img in _stored_images(session, model))
    images.extend((ACCOUNT_TABLE, name, img) for name, img in account_images(session).items())
    for table, row_id, img in images:
        rows += 1
        key_ = (table, row_id)
        seen.add(key_)
        exp = state.get(key_, KeyError)
        if exp is KeyError:
            add(AuditIssue("IG-AUD-E007", f"{table} row {row_id} has no audit entry (written behind the "
                                          "audit's back)", None, table, row_id))
        elif exp is None:
            add(AuditIssue("IG-AUD-E010", f"{table} row {row_id} was deleted per the audit trail but is present",
                           None, table, row_id))
        elif exp is _REDACTED:
            add(AuditIssue("IG-AUD-E008", f"{table} row {row_id}: its last audited image was redacted but the "
                                          "row is still present", None, table, row_id))
        else:
            cols = _same_image(img, exp)
            if cols:
                add(AuditIssue("IG-AUD-E008", f"{table} row {row_id} differs from its audited image in "
                                              f"{', '.join(cols)} (edited behind the audit's back)",
                               None, table, row_id))
    for key_, exp in state.items():
        if exp is not None and key_ not in seen:
            add(AuditIssue("IG-AUD-E009", f"{key_[0]} row {key_[1]} is missing (deleted behind the audit's back)",
                           None, key_[0], key_[1]))
    return AuditReport(
        entries=n,
        head_seq=head.seq if head else -1,
        head_hash=head.hash if head else "",
        rows_checked=rows,
        issues=tuple(issues),
        keyed=key is not None,
        checkpoints=tuple(checked),
    )


def hmac_equal(a: str, b: str | None) -> bool:
    """Constant-time comparison of two hex MACs."""
    import hmac as _hmac

    return b is not None and _hmac.compare_digest(a, b)


def require_intact(report: AuditReport) -> None:
    """Raise :class:`AuditChainBroken` naming the first issue unless ``report.ok``."""
    if report.ok:
        return
    first = report.first_broken
    assert first is not None
    raise AuditChainBroken(
        expected="an intact audit chain and data tables matching it",
        got=f"{len(report.issues)} issue(s); first: {first.id} {first.message}",
        where="audit verify",
        todo="restore the store from the last good backup and investigate who changed it; "
        "`immunoguide audit verify` lists every issue",
    )


def checkpoint(session: Session, *, actor: Actor, now: datetime) -> dict[str, Any]:
    """A MAC'd checkpoint of the chain's head, to keep outside the database (file, trial master file).

    The chain is verified first (with the key) and the checkpoint is refused unless it is intact. The checkpoint
    names the head's sequence number, hash and system time; the export itself is recorded in the trail (after
    the checkpointed entry). ``verify_audit(checkpoints=[…])`` later proves nothing up to that entry changed.
    """
    from immunoguide.trial._authz import authorize

    authorize(actor, "checkpoint")
    key = clock.require_key(session, "a checkpoint is MAC'd with the trial key")
    report = verify_audit(session, key=key)
    require_intact(report)
    head = session.execute(select(AuditHead).where(AuditHead.id == 1)).scalar_one()
    entry = session.execute(select(AuditRecord).where(AuditRecord.seq == head.seq)).scalar_one_or_none()
    cfg = clock.store_config(session)
    body: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "key_id": key.key_id,
        "store_created_at": _jsonable(cfg.created_at) if cfg is not None else None,
        "seq": head.seq,
        "hash": head.hash,
        "system_at": _jsonable(entry.system_at) if entry is not None and entry.system_at is not None else None,
        "entries": report.entries,
        "created_at": _jsonable(clock.system_now(session)),
        "created_by": actor.user,
    }
    body["mac"] = key.mac("checkpoint", body)
    append(session, actor, now, action="checkpoint", table="audit_log", row_id=str(head.seq), patient_id=None,
           payload={"seq": head.seq, "hash": head.hash})
    return body
