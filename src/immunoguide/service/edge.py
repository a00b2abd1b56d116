"""The request edge of the service: a size limit on every body and strict JSON, before any route runs.

:class:`BodyGuard` is an ASGI middleware in front of every route (REST, CDS Hooks, dashboard, login — also those
that need no login):

* a body larger than the limit (``ServiceSettings.max_body_bytes``; a larger one for the upload routes) is refused
  with **413** (``IG-E112``) — from its ``Content-Length`` before anything is read, or as soon as the streamed body
  passes the limit (a 200 MB body is never read in full);
* a JSON body (``application/json`` or ``+json``) is decoded with :func:`immunoguide.jsonsafe.loads_strict`: a
  duplicate key (``IG-E110``), a number with more than 18 digits or nesting deeper than 32 levels (``IG-E112``)
  are refused with **422** and the usual error body, so no route ever sees the last of two equal keys or crashes
  on a 4 301-digit integer (broken JSON and ``NaN``/``Infinity`` are left to the request models, which refuse them
  with the pydantic error list).

The body is then replayed to the application unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from starlette.responses import JSONResponse

from immunoguide.errors import DuplicateFieldError, ImmunoguideError, InputError, InputTooLargeError, WrongTypeError
from immunoguide.jsonsafe import loads_strict

__all__ = ["BodyGuard"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyGuard:
    """ASGI middleware: body size limit (413) and strict JSON (422) for every HTTP request."""

    def __init__(self, app: Any, *, max_bytes: int, large_bytes: int, large_paths: Sequence[str]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.large_bytes = large_bytes
        self.large_paths = tuple(large_paths)

    def _limit(self, path: str) -> int:
        return self.large_bytes if path.startswith(self.large_paths) else self.max_bytes

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int, exc: ImmunoguideError) -> None:
        from immunoguide.service.errors import error_body

        await JSONResponse(status_code=status, content=error_body(exc))(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = self._limit(path)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        too_large = InputTooLargeError(expected=f"a request body of at most {limit} bytes", got=None, where="request body",
                                       todo="send a smaller body (upload large files in parts, or use the CLI)")
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await self._refuse(scope, receive, send, 400, InputError(
                    expected="a Content-Length of digits", got=declared[:40], where="request header Content-Length",
                    todo="send a valid HTTP request"))
                return
            if int(declared) > limit:
                too_large.got = f"{int(declared)} bytes (Content-Length)"
                await self._refuse(scope, receive, send, 413, too_large)
                return
        chunks: list[bytes] = []
        size = 0
        more = True
        disconnected: Message | None = None
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = message
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                too_large.got = f"more than {limit} bytes"
                await self._refuse(scope, receive, send, 413, too_large)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if body and (ctype == "application/json" or ctype.endswith("+json")):
            try:
                loads_strict(body, where="request body")
            except (DuplicateFieldError, InputTooLargeError, WrongTypeError) as exc:
                from immunoguide.service.errors import status_for

                await self._refuse(scope, receive, send, status_for(exc), exc)
                return
            except InputError:
                pass  # broken JSON, NaN/Infinity: FastAPI/pydantic answer 422 with the pydantic error list
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            if disconnected is not None:
                return disconnected
            return await receive()

        await self.app(scope, replay, send)
