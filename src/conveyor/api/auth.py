"""Bearer tokens with scopes, kept only as SHA-256 hashes.

A token line reads ``<token or sha256:HEX> <scope> [<scope>...] [# comment]``; scopes are
``read``, ``enqueue`` and ``admin`` (admin may do everything). Lines come from
``CONVEYOR_API_TOKENS`` (separated by ``;`` or newlines) and from the file named by
``CONVEYOR_API_TOKENS_FILE``. Write hashes, not tokens, where you can
(``printf %s "$TOKEN" | sha256sum``); a plain token is hashed as it is read and only its
hash is kept. A plain token must be at least 16 characters and no scope name: a line like
``"$TOKEN read admin"`` whose variable was empty would otherwise make ``read`` an admin token.
``conveyor api --generate-token`` prints a fresh one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigurationError

SCOPES = ("read", "enqueue", "admin")
MIN_TOKEN_LENGTH = 16


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token (print it once, store its hash)."""
    return "cvt_" + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class TokenStore:
    """Token hashes and their scopes."""

    hashes: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.hashes)

    def scopes_of(self, token: str) -> frozenset[str] | None:
        """The token's scopes, or None when it is not known."""
        digest = hash_token(token)
        for known, scopes in self.hashes.items():  # constant-time comparison of every hash
            if hmac.compare_digest(known, digest):
                return scopes
        return None

    @classmethod
    def parse(cls, lines: Iterable[str], source: str = "tokens") -> TokenStore:
        hashes: dict[str, frozenset[str]] = {}
        for number, raw in enumerate(lines, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            secret, *scopes = line.split()
            unknown = [s for s in scopes if s not in SCOPES]
            if not scopes or unknown:
                raise ConfigurationError(
                    f"{source}, entry {number}: give a token then scopes among {', '.join(SCOPES)}"
                    + (f" (unknown: {', '.join(unknown)})" if unknown else "")
                )
            if secret.startswith("sha256:"):
                digest = secret[len("sha256:") :].lower()
                if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                    raise ConfigurationError(f"{source}, entry {number}: sha256: needs 64 hex digits")
            else:
                _check_plain(secret, f"{source}, entry {number}")
                digest = hash_token(secret)
            hashes[digest] = frozenset(scopes)
        return cls(hashes)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TokenStore:
        lines: list[str] = []
        inline = env.get("CONVEYOR_API_TOKENS", "")
        lines += inline.replace(";", "\n").splitlines()
        path = env.get("CONVEYOR_API_TOKENS_FILE")
        if path:
            try:
                lines += Path(path).read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ConfigurationError(f"CONVEYOR_API_TOKENS_FILE: cannot read {path}: {exc}") from None
        return cls.parse(lines, "CONVEYOR_API_TOKENS")


def _check_plain(secret: str, where: str) -> None:
    """Refuse a plain token that is guessable, or that is a scope name: the sign of a token
    variable that was empty (``"$TOKEN read admin"`` reads as token ``read``)."""
    # No example token in the message: errors end up in logs, where a token must not.
    hint = "`conveyor api --generate-token` prints a fresh one"
    if secret in SCOPES:
        raise ConfigurationError(
            f"{where}: the token is {secret!r}, a scope name; was the variable meant to hold the "
            f"token empty? Give a token of at least {MIN_TOKEN_LENGTH} characters, then its "
            f"scopes; {hint}"
        )
    if len(secret) < MIN_TOKEN_LENGTH:
        raise ConfigurationError(
            f"{where}: the token is {len(secret)} characters; tokens need at least "
            f"{MIN_TOKEN_LENGTH} (or give its hash as sha256:HEX); {hint}"
        )
