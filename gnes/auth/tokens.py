"""Tokens and their roles, read from a file or the environment.

File (``--token_file`` or ``$GNES_TOKEN_FILE``): one ``TOKEN ROLE`` per line, blank lines and
``#`` comments ignored; or, when the file starts with ``{`` or ``[``, JSON: ``{"TOKEN": "ROLE"}``
or ``[{"token": "TOKEN", "role": "ROLE"}, ...]``. Environment: ``GNES_TOKENS="TOKEN:ROLE,TOKEN:ROLE"``.
Roles: ``read`` (search, embed, status) and ``admin`` (also index, delete, manage indexes).

No token configured anywhere: the service is open, as before tokens existed (a local stack and
the tests need no setup); `TokenStore.enabled` says which, and services log it at start.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

ENV_TOKENS = "GNES_TOKENS"
ENV_TOKEN_FILE = "GNES_TOKEN_FILE"


class Role(enum.IntEnum):
    """Ordered: a role allows everything a lower one does."""

    READ = 1
    ADMIN = 2

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}: expected read or admin") from None


class TokenStore:
    """Checks a presented token against the configured ones in constant time."""

    def __init__(self, tokens: Mapping[str, Role] | None = None) -> None:
        for token in tokens or {}:
            if not token or any(c.isspace() for c in token):
                raise ValueError("a token must be non-empty and without whitespace")
        # Digests, not the tokens: every comparison is between 32-byte values, so neither the
        # length nor a common prefix of a guess changes how long the check takes.
        self._digests = [(_digest(token), role) for token, role in (tokens or {}).items()]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def role_of(self, token: str | None) -> Role | None:
        """The role of `token`, or None when it is missing or unknown."""
        if not token:
            return None
        presented = _digest(token)
        found: Role | None = None
        for digest, role in self._digests:  # no early exit: the time does not say which one matched
            if hmac.compare_digest(presented, digest):
                found = role
        return found

    @classmethod
    def from_text(cls, text: str) -> TokenStore:
        return cls(dict(_parse_text(text)))

    @classmethod
    def from_sources(
        cls, token_file: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
    ) -> TokenStore:
        """Tokens of `token_file` (else $GNES_TOKEN_FILE) plus those of $GNES_TOKENS."""
        env = os.environ if env is None else env
        tokens: dict[str, Role] = {}
        path = token_file or env.get(ENV_TOKEN_FILE, "")
        if path:
            tokens.update(_parse_text(Path(path).read_text(encoding="utf-8"), str(path)))
        for item in filter(None, (part.strip() for part in env.get(ENV_TOKENS, "").split(","))):
            token, sep, role = item.rpartition(":")
            if not sep or not token:
                raise ValueError(f"${ENV_TOKENS}: expected TOKEN:ROLE items separated by commas")
            tokens[token] = Role.parse(role)
        return cls(tokens)


def parse_authorization(header: str | None) -> str | None:
    """The token of an ``Authorization`` header: ``Bearer TOKEN``, or ``Basic`` base64 of
    ``USER:TOKEN`` (any user name; the password is the token, as behind a reverse proxy)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, sep, password = decoded.partition(":")
        return password if sep and password else None
    return None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _parse_text(text: str, where: str = "tokens") -> Iterable[tuple[str, Role]]:
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        data = json.loads(stripped)
        items = data.items() if isinstance(data, dict) else ((d["token"], d["role"]) for d in data)
        for token, role in items:
            yield str(token), Role.parse(str(role))
        return
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            # The line itself is not quoted: it holds a token.
            raise ValueError(f"{where}, line {number}: expected 'TOKEN ROLE'")
        yield parts[0], Role.parse(parts[1])
