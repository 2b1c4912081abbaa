"""Who is calling: ``Authorization: Bearer <API key or JWT>`` → a :class:`Principal`.

A bearer value of three dot-separated parts is a JWT (pyjwt: signature with the configured HS256
secret or the JWKS file's key named by ``kid``, ``exp`` required, ``aud`` checked when configured);
anything else is an API key (``pgactions keys create``), looked up by hash in the state store.

Staleness: a key record read from the store is reused for at most ``cache_seconds`` (default 1 s),
so a key revoked on any process sharing the store is refused everywhere within that time.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt as pyjwt

from pgactions.service.apikeys import hash_key, principal_for_key, usable, verify_key
from pgactions.service.principal import ANONYMOUS, Principal
from pgactions.service.store import KeyRecord, StateStore
from pgactions.spec.errors import ActionError

__all__ = ["Authenticator", "JwtSettings"]

_HMAC = frozenset({"HS256", "HS384", "HS512"})
_ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "PS384", "PS512", "EdDSA"})
_MAX_TOKEN = 16384  # bytes of bearer value looked at; a longer one is refused unread
_CACHE_MAX = 4096


@dataclass(frozen=True)
class JwtSettings:
    """How tokens are verified.

    ``secret``: the HS256 shared secret; ``jwks_file``: a JSON file ``{"keys": [...]}`` with the public
    keys (RS256), read once when the service starts.  ``audience``: the ``aud`` a token must carry (a
    token with an ``aud`` is refused when none is configured).  ``role_claim``: the claim naming the
    database role the action runs as (None: no role).  ``context_claims``: context name → claim name,
    values pinned for templates as ``{{ auth.<name> }}`` — a token lacking one is refused.
    ``allow_sql``: whether a token with pinned values may still run free-SQL actions.
    """

    secret: str | None = field(default=None, repr=False)
    jwks_file: str | Path | None = None
    audience: str | Sequence[str] | None = None
    issuer: str | None = None
    role_claim: str | None = "role"
    context_claims: Mapping[str, str] = field(default_factory=dict)
    algorithms: tuple[str, ...] = ("HS256", "RS256")
    leeway: float = 0.0
    allow_sql: bool = False


class Authenticator:
    """``authenticate(header) -> Principal``, or ActionError UNAUTHORIZED.  Thread-safe."""

    def __init__(self, store: StateStore, jwt: JwtSettings | None = None, enabled: bool = True,
                 cache_seconds: float = 1.0) -> None:
        self.store = store
        self.jwt = jwt
        self.enabled = enabled
        self.cache_seconds = cache_seconds
        self._jwks: dict[str, pyjwt.PyJWK] = {}
        if jwt is not None:
            if jwt.secret is None and jwt.jwks_file is None:
                raise ValueError("JWT settings need a secret (HS256) or a JWKS file (RS256)")
            if jwt.jwks_file is not None:
                self._jwks = _load_jwks(Path(jwt.jwks_file))
        self._cache: dict[str, tuple[KeyRecord, float]] = {}
        self._cache_lock = threading.Lock()

    def authenticate(self, authorization: str | None) -> Principal:
        if not self.enabled:
            return ANONYMOUS
        if not authorization:
            raise _unauthorized("no Authorization header; send Authorization: Bearer <key>")
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise _unauthorized("the Authorization header must be: Bearer <key or token>")
        if len(credential) > _MAX_TOKEN:
            raise _unauthorized("the bearer value is too long")
        if credential.count(".") == 2:
            return self._token(credential)
        return self._key(credential)

    def answers_from_memory(self, authorization: str | None) -> bool:
        """Whether :meth:`authenticate` can answer without reading the store (no auth, a token, a
        key looked up within the cache's time): the service calls it in the event loop then, and
        in a worker thread otherwise (a store read may wait on disk or the network)."""
        if not self.enabled or not authorization:
            return True
        credential = authorization.strip().partition(" ")[2].strip()
        if not credential or len(credential) > _MAX_TOKEN or credential.count(".") == 2:
            return True
        cached = self._cache.get(hash_key(credential))
        return cached is not None and time.monotonic() - cached[1] < self.cache_seconds

    # -- API keys ---------------------------------------------------------------------------------

    def _key(self, key_text: str) -> Principal:
        now = time.time()
        key_hash = hash_key(key_text)
        cached = self._cache.get(key_hash)
        if cached is not None and time.monotonic() - cached[1] < self.cache_seconds:
            record: KeyRecord | None = cached[0] if usable(cached[0], now) else None
        else:
            record = verify_key(self.store, key_text, now)
            with self._cache_lock:
                if len(self._cache) >= _CACHE_MAX:
                    self._cache.clear()
                if record is not None:
                    self._cache[key_hash] = (record, time.monotonic())
                else:
                    self._cache.pop(key_hash, None)
        if record is None:
            raise _unauthorized("the API key is unknown, revoked or expired")
        return principal_for_key(record)

    # -- JWTs ----------------------------------------------------------------------------------------

    def _token(self, token: str) -> Principal:
        settings = self.jwt
        if settings is None:
            raise _unauthorized("this service accepts API keys, not tokens")
        try:
            header = pyjwt.get_unverified_header(token)
        except pyjwt.PyJWTError:
            raise _unauthorized("the token is malformed") from None
        algorithm = header.get("alg")
        if algorithm not in settings.algorithms:
            raise _unauthorized(f"the token's algorithm {str(algorithm)[:20]!r} is not accepted")
        # The key is chosen by the algorithm's family, and only that algorithm is allowed when
        # verifying: an RS256 public key can never be used as an HMAC secret (algorithm confusion).
        key: Any
        if algorithm in _HMAC and settings.secret is not None:
            key = settings.secret
        elif algorithm in _ASYMMETRIC and self._jwks:
            key = self._jwk(header.get("kid"))
        else:
            raise _unauthorized(f"no key is configured for {algorithm} tokens")
        try:
            claims = pyjwt.decode(token, key, algorithms=[algorithm], audience=settings.audience,
                                       issuer=settings.issuer, leeway=settings.leeway,
                                       options={"require": ["exp"]})
        except pyjwt.ExpiredSignatureError:
            raise _unauthorized("the token has expired") from None
        except pyjwt.InvalidAudienceError:
            raise _unauthorized("the token's audience (aud) is not this service's") from None
        except pyjwt.MissingRequiredClaimError as exc:
            raise _unauthorized(f"the token has no {exc.claim} claim") from None
        except pyjwt.PyJWTError as exc:
            raise _unauthorized(f"the token is not valid ({type(exc).__name__})") from None
        return self._principal(claims, settings)

    def _jwk(self, kid: Any) -> Any:
        if kid is None and len(self._jwks) == 1:
            return next(iter(self._jwks.values())).key
        found = self._jwks.get(kid) if isinstance(kid, str) else None
        if found is None:
            raise _unauthorized("the token's key id (kid) is not in the configured JWKS")
        return found.key

    @staticmethod
    def _principal(claims: dict[str, Any], settings: JwtSettings) -> Principal:
        subject = claims.get("sub", "jwt")
        if not isinstance(subject, str) or not subject:
            raise _unauthorized("the token's sub claim is not a string")
        role = None
        if settings.role_claim is not None and settings.role_claim in claims:
            role = claims[settings.role_claim]
            if not isinstance(role, str) or not role or len(role) > 63:
                raise _unauthorized(f"the token's {settings.role_claim} claim is not a role name")
        pinned = {}
        for name, claim in settings.context_claims.items():
            # A token without the claim must not run unpinned: refused, never defaulted.
            if claim not in claims or claims[claim] is None:
                raise _unauthorized(f"the token has no {claim} claim")
            pinned[name] = claims[claim]
        issuer = claims.get("iss")
        return Principal(name=subject, kind="jwt", pinned=pinned, allow_sql=settings.allow_sql, role=role,
                         credential=issuer if isinstance(issuer, str) else "")


def _load_jwks(path: Path) -> dict[str, pyjwt.PyJWK]:
    try:
        document = json.loads(path.read_text("utf-8"))
        key_set = pyjwt.PyJWKSet.from_dict(document)
    except (OSError, ValueError, pyjwt.PyJWTError) as exc:
        raise ValueError(f"the JWKS file {path} cannot be used ({type(exc).__name__}: {exc})") from None
    keys: dict[str, pyjwt.PyJWK] = {}
    for index, jwk in enumerate(key_set.keys):
        keys[jwk.key_id or f"#{index}"] = jwk
    return keys


def _unauthorized(detail: str) -> ActionError:
    return ActionError("UNAUTHORIZED", detail)
