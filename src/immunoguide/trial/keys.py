"""The trial key: a 256-bit secret kept **outside** the database that seals the allocation lists and keys the audit chain.

Whoever holds only the database (a database administrator, a backup, a blinded statistician's export) cannot
derive an arm, and cannot rewrite the audit trail without it being detected; whoever holds the key (the running
service and command line, the unblinded list statistician, the DSMB's verifier) can open arms and verify.

Every use of the key goes through a purpose-bound sub-key (``HMAC-SHA-256(key, "immunoguide/<purpose>")``), so a
value computed for one purpose is never valid for another:

============== ==========================================================================================
``allocation`` per-slot arm commitments ``HMAC(k, ["slot", list, site, stratum, seq, arm])`` and the list MAC
``kit``        kit numbers (independent of the arm)
``audit``      the MAC of every audit-chain entry (over its hash) and of the chain head
``config``     the MAC of the store's configuration row (mode, key id, clock tolerance …)
``checkpoint`` the MAC of audit checkpoints exported to a file
``tokens``     the digest of login tokens when no separate service secret is configured
============== ==========================================================================================

Where the key comes from (:func:`load_key`): ``$IMMUNOGUIDE_TRIAL_KEY`` (64 hex digits) or the file named by
``$IMMUNOGUIDE_TRIAL_KEY_FILE`` (written by ``immunoguide trial keygen``; one line of 64 hex digits). The store
records only the key's id (:attr:`TrialKey.key_id`, an HMAC of a constant), so a wrong key is refused.

Examples
--------
>>> k = TrialKey.from_hex("00" * 32)
>>> k.key_id
'aa19f2a645675201'
>>> len(k.mac("allocation", ["slot", "ATH-MALS", "ATH", "MALS", 1, "mals_placebo"]))
64
>>> k.mac("allocation", [1]) == k.mac("audit", [1])
False
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from immunoguide.errors import TrialKeyError

__all__ = ["ENV_KEY", "ENV_KEY_FILE", "PURPOSES", "TrialKey", "load_key", "write_key_file"]

ENV_KEY = "IMMUNOGUIDE_TRIAL_KEY"
ENV_KEY_FILE = "IMMUNOGUIDE_TRIAL_KEY_FILE"
PURPOSES = ("allocation", "kit", "audit", "config", "checkpoint", "tokens")
_KEY_BYTES = 32


def _canonical(parts: Any) -> bytes:
    return json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


@dataclass(frozen=True)
class TrialKey:
    """A 256-bit trial key (never printed: ``repr`` shows the key id only)."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) != _KEY_BYTES:
            raise TrialKeyError(expected=f"a key of {_KEY_BYTES} bytes (64 hex digits)",
                                got=f"{len(self.secret) if isinstance(self.secret, bytes) else type(self.secret).__name__}",
                                where="trial key", todo="generate one with `immunoguide trial keygen --out FILE`")

    def __repr__(self) -> str:
        return f"TrialKey(key_id={self.key_id!r})"

    @classmethod
    def generate(cls) -> TrialKey:
        """A new key from the operating system's cryptographic random source."""
        return cls(secrets.token_bytes(_KEY_BYTES))

    @classmethod
    def from_hex(cls, text: str) -> TrialKey:
        """The key written as 64 hex digits (surrounding white space ignored)."""
        t = (text or "").strip()
        try:
            raw = bytes.fromhex(t)
        except ValueError:
            raw = b""
        if len(raw) != _KEY_BYTES:
            raise TrialKeyError(expected="64 hex digits", got=f"{len(t)} characters", where="trial key",
                                todo="use the file written by `immunoguide trial keygen`")
        return cls(raw)

    @classmethod
    def from_file(cls, path: str | Path) -> TrialKey:
        """The key of a key file written by :func:`write_key_file` (``immunoguide trial keygen``): its first line
        that is neither blank nor a ``#`` comment. Raises TrialKeyError for an unreadable or malformed file."""
        try:
            content = Path(path).read_text()
        except OSError as exc:
            raise TrialKeyError(expected="a readable trial key file", got=str(path), where=ENV_KEY_FILE,
                                todo=f"check the path ({exc.strerror})") from None
        lines = [ln.strip() for ln in content.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        return cls.from_hex(lines[0] if lines else "")

    def to_hex(self) -> str:
        """The key as 64 hex digits (what a key file holds)."""
        return self.secret.hex()

    @property
    def key_id(self) -> str:
        """A public fingerprint of the key (64 bits of an HMAC of a constant; reveals nothing of the key)."""
        return hmac.new(self.secret, b"immunoguide/key-id/v1", hashlib.sha256).hexdigest()[:16]

    def subkey(self, purpose: str) -> bytes:
        """The sub-key of one purpose (:data:`PURPOSES`)."""
        if purpose not in PURPOSES:
            raise ValueError(f"unknown key purpose {purpose!r}")
        return hmac.new(self.secret, f"immunoguide/{purpose}".encode(), hashlib.sha256).digest()

    def mac(self, purpose: str, parts: Any) -> str:
        """HMAC-SHA-256 (hex) of the canonical JSON of ``parts`` under the purpose's sub-key."""
        return hmac.new(self.subkey(purpose), _canonical(parts), hashlib.sha256).hexdigest()

    def check(self, purpose: str, parts: Any, mac: str | None) -> bool:
        """Whether ``mac`` is the MAC of ``parts`` (constant-time comparison)."""
        return mac is not None and hmac.compare_digest(self.mac(purpose, parts), mac)


def load_key(*, required: bool = False, environ: Any = None) -> TrialKey | None:
    """The key from ``$IMMUNOGUIDE_TRIAL_KEY`` or the file named by ``$IMMUNOGUIDE_TRIAL_KEY_FILE`` (None if neither).

    Raises TrialKeyError when ``required`` and no key is configured, or when the variable or file is malformed.
    """
    env = os.environ if environ is None else environ
    text = env.get(ENV_KEY)
    if text:
        return TrialKey.from_hex(text)
    path = env.get(ENV_KEY_FILE)
    if path:
        return TrialKey.from_file(path)
    if required:
        raise TrialKeyError(expected=f"the trial key in ${ENV_KEY_FILE} (a key file) or ${ENV_KEY}", got=None,
                            where="environment",
                            todo="export IMMUNOGUIDE_TRIAL_KEY_FILE=/path/to/trial.key (made by `immunoguide trial keygen`)")
    return None


def write_key_file(path: str | Path, key: TrialKey | None = None) -> TrialKey:
    """Write a new (or the given) key to ``path``, readable by its owner only; an existing file is never replaced."""
    key = key or TrialKey.generate()
    p = Path(path)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    except FileExistsError:
        raise TrialKeyError(expected="a path where no key file exists yet", got=str(p), where="keygen",
                            todo="a trial key is never overwritten: choose another path") from None
    with os.fdopen(fd, "w") as f:
        f.write(f"# immunoguide trial key {key.key_id}: keep outside the database, never share with blinded staff\n")
        f.write(key.to_hex() + "\n")
    return key
