"""Failed-login throttling: after too many wrong passwords an account (or a client) is locked for a while.

Without it the right password still worked after 30 wrong ones (issue 15), so a password could be guessed at the
service's speed. :class:`LoginThrottle` counts failed logins per account and per client address in a sliding
window; once an account reaches ``max_failures`` (a client ``4 × max_failures``, as several users may share a
site's address) within ``window_s`` seconds, every login for it — **the right password included** — is refused
with :class:`~immunoguide.errors.LoginThrottled` (``IG-E421``, HTTP 429 with ``Retry-After``) for ``lockout_s``
seconds. A successful login clears the account's failures. Counts live in the process (one worker: exact; several
workers: per worker, so the effective limit is multiplied by the worker count — stated in ``immunoguide serve``).
The limits are platform choices (5 failures / 15 min / 15 min lock follow common guidance), settable in
:class:`~immunoguide.service._context.ServiceSettings`.

Examples
--------
>>> t = LoginThrottle(3, 60, 300, clock=lambda: 0.0)
>>> for _ in range(3):
...     t.failure("rivera", "10.0.0.1")
>>> t.check("rivera", "10.0.0.2")
Traceback (most recent call last):
...
immunoguide.errors.LoginThrottled: [IG-E421] expected fewer than 3 failed logins within 60 s; got 'account locked'; in login; what to do: wait 300 s and try again, or ask the administrator to reset the password
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from immunoguide.errors import LoginThrottled

__all__ = ["LoginThrottle"]


class LoginThrottle:
    """Sliding-window failed-login counter with lockout (thread-safe)."""

    def __init__(self, max_failures: int = 5, window_s: float = 900.0, lockout_s: float = 900.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._locked_until: dict[tuple[str, str], float] = {}

    def _keys(self, username: str, client: str | None) -> list[tuple[tuple[str, str], int]]:
        keys = [(("user", username.strip().lower()), self.max_failures)]
        if client:
            keys.append((("client", client), 4 * self.max_failures))
        return keys

    def check(self, username: str, client: str | None) -> None:
        """Raise :class:`LoginThrottled` when the account or the client is locked."""
        now = self._clock()
        with self._lock:
            for key, _limit in self._keys(username, client):
                until = self._locked_until.get(key)
                if until is not None and now < until:
                    exc = LoginThrottled(
                        expected=f"fewer than {self.max_failures} failed logins within {self.window_s:g} s",
                        got=f"{'account' if key[0] == 'user' else 'client'} locked", where="login",
                        todo=f"wait {max(1, round(until - now))} s and try again, or ask the administrator to reset "
                             "the password",
                    )
                    exc.retry_after_s = max(1, round(until - now))  # type: ignore[attr-defined]
                    raise exc

    def failure(self, username: str, client: str | None) -> None:
        """Count a failed login; lock the account/client when it reaches its limit."""
        now = self._clock()
        with self._lock:
            for key, limit in self._keys(username, client):
                q = self._failures.setdefault(key, deque())
                q.append(now)
                while q and q[0] <= now - self.window_s:
                    q.popleft()
                if len(q) >= limit:
                    self._locked_until[key] = now + self.lockout_s
                    q.clear()

    def success(self, username: str) -> None:
        """A successful login clears the account's failure count."""
        with self._lock:
            self._failures.pop(("user", username.strip().lower()), None)
