"""``/auth``: log in (bearer token), log out, who am I."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from immunoguide.errors import NotAuthenticated
from immunoguide.service._context import NowDep, PrincipalDep, StateDep, bearer_scheme
from immunoguide.service.schemas import ErrorBody, LoginRequest, TokenResponse, UserInfo
from immunoguide.trial.access import sees_arms

__all__ = ["router", "throttled_login"]

router = APIRouter(prefix="/auth", tags=["auth"],
                   responses={401: {"model": ErrorBody, "description": "Not authenticated (IG-E418)."}})


@router.post("/token", summary="Log in", response_model=TokenResponse,
             responses={422: {"model": ErrorBody, "description": "Malformed request."},
                        429: {"model": ErrorBody, "description": "Too many failed logins: locked (IG-E421)."}})
async def login(body: LoginRequest, st: StateDep, now: NowDep, request: Request) -> dict[str, Any]:
    """Exchange a user name and password for a bearer token (valid for the configured lifetime).

    After too many failed logins the account (or client) is locked for a while: 429, even with the right password.
    """
    token, p = await throttled_login(st, body.username, body.password, now, request.client.host if request.client else None)
    return {"access_token": token, "token_type": "bearer", "expires_at": p.expires_at, "user": p.actor.user,
            "role": p.actor.role, "site": p.actor.site, "blinded": not sees_arms(p.actor)}


async def throttled_login(st: Any, username: str, password: str, now: Any, client: str | None) -> Any:
    """``st.users.login`` behind the failed-login throttle (:mod:`immunoguide.service.throttle`)."""
    if st.throttle is not None:
        st.throttle.check(username, client)
    try:
        out = await anyio.to_thread.run_sync(lambda: st.users.login(username, password, now=now))
    except NotAuthenticated:
        if st.throttle is not None:
            st.throttle.failure(username, client)
        raise
    if st.throttle is not None:
        st.throttle.success(username)
    return out


@router.post("/logout", summary="Log out", status_code=204)
async def logout(
    principal: PrincipalDep, st: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> None:
    """Revoke the token of this request."""
    if credentials is not None:
        token = credentials.credentials
        await anyio.to_thread.run_sync(lambda: st.users.revoke(token))


@router.get("/me", summary="Who am I", response_model=UserInfo)
async def me(principal: PrincipalDep) -> dict[str, Any]:
    """The logged-in user's name, role, site and whether the role is blinded."""
    a = principal.actor
    return {"user": a.user, "role": a.role, "site": a.site, "blinded": not sees_arms(a)}
