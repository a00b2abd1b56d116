"""``/auth``: log in (bearer token), log out, who am I."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends
from fastapi.security import HTTPAuthorizationCredentials

from immunoguide.service._context import NowDep, PrincipalDep, StateDep, bearer_scheme
from immunoguide.service.schemas import ErrorBody, LoginRequest, TokenResponse, UserInfo
from immunoguide.trial.access import sees_arms

__all__ = ["router"]

router = APIRouter(prefix="/auth", tags=["auth"],
                   responses={401: {"model": ErrorBody, "description": "Not authenticated (IG-E418)."}})


@router.post("/token", summary="Log in", response_model=TokenResponse,
             responses={422: {"model": ErrorBody, "description": "Malformed request."}})
async def login(body: LoginRequest, st: StateDep, now: NowDep) -> dict[str, Any]:
    """Exchange a user name and password for a bearer token (valid for the configured lifetime)."""
    token, p = await anyio.to_thread.run_sync(lambda: st.users.login(body.username, body.password, now=now))
    return {"access_token": token, "token_type": "bearer", "expires_at": p.expires_at, "user": p.actor.user,
            "role": p.actor.role, "site": p.actor.site, "blinded": not sees_arms(p.actor)}


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
