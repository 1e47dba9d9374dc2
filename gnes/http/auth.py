"""FastAPI dependencies that check the caller's token: `require_read` and `require_admin`.

The TokenStore is `app.state.tokens` (see gnes/auth/tokens.py for the file and environment
formats); without one, or with one holding no token, every endpoint is open. Credentials come
in the ``Authorization`` header only, as ``Bearer TOKEN`` or HTTP basic with the token as the
password; never in the URL, where access logs and browser histories would keep them.
"""

from __future__ import annotations

import logging

from fastapi import HTTPException, Request, status

from ..auth import Role, TokenStore, parse_authorization

log = logging.getLogger("gnes.auth")

# Both schemes are offered: a browser asks for a user and password on Basic.
CHALLENGE = 'Bearer realm="gnes", Basic realm="gnes"'


def token_store(request: Request) -> TokenStore | None:
    return getattr(request.app.state, "tokens", None)


def check(request: Request, needed: Role) -> Role | None:
    """The caller's role; raises 401 for a missing or unknown token, 403 for too low a role.
    The log line names the endpoint, the peer and the reason, never the token."""
    store = token_store(request)
    if store is None or not store.enabled:
        return None
    token = parse_authorization(request.headers.get("authorization"))
    role = store.role_of(token)
    where = f"{request.method} {request.url.path} from {request.client.host if request.client else '?'}"
    if role is None:
        why = "no token" if token is None else "an unknown token"
        log.warning("HTTP %s refused: %s (401)", where, why)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, f"{why}: send a bearer token", {"WWW-Authenticate": CHALLENGE}
        )
    if role < needed:
        log.warning("HTTP %s refused: a %s token, %s needed (403)", where, role.name.lower(), needed.name.lower())
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"this endpoint needs an {needed.name.lower()} token")
    return role


async def require_read(request: Request) -> Role | None:
    return check(request, Role.READ)


async def require_admin(request: Request) -> Role | None:
    return check(request, Role.ADMIN)
