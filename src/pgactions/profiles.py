"""Connection profiles: a form's fields, a ``postgresql://`` URL, or a YAML/JSON file of either.

The password lives in the profile and nowhere else: ``repr`` hides it and :meth:`secrets`
lets the error boundary scrub it from anything shown to a user.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jsonschema
import yaml

from .errors import ActionError

__all__ = ["ConnectionProfile", "load_profile"]

_URL_QUERY_KEYS = {
    "sslmode": "sslMode", "sslrootcert": "sslRootCert", "connect_timeout": "connectTimeout",
    "application_name": "applicationName",
}


@dataclass(frozen=True)
class ConnectionProfile:
    host: str = "localhost"
    port: int = 5432
    database: str = "postgres"
    username: str = "postgres"
    password: str | None = None
    sslMode: str = "prefer"
    sslRootCert: str | None = None
    connectTimeout: float = 10
    schema: str | None = None
    applicationName: str = "pgactions"
    poolSize: int = 5

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                          if f.name != "password" and getattr(self, f.name) is not None)
        return f"ConnectionProfile({shown}, password={'***' if self.password else None})"

    __str__ = __repr__

    def secrets(self) -> tuple[str, ...]:
        return (self.password,) if self.password else ()

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for psycopg.connect (libpq names)."""
        kwargs: dict[str, Any] = {
            "host": self.host, "port": self.port, "dbname": self.database, "user": self.username,
            "sslmode": self.sslMode, "connect_timeout": max(1, int(round(self.connectTimeout))),
            "application_name": self.applicationName,
        }
        if self.password is not None:
            kwargs["password"] = self.password
        if self.sslRootCert:
            kwargs["sslrootcert"] = self.sslRootCert
        return kwargs

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConnectionProfile:
        from .manifests import load_schema

        validator = jsonschema.Draft202012Validator(load_schema("connection.schema.json"))
        problems = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        if problems:
            errors = [{"path": "/".join(map(str, e.absolute_path)) or "(connection)",
                       "message": _safe_message(e)} for e in problems]
            raise ActionError("INVALID_INPUT", "the connection is not valid: " +
                              "; ".join(f"{e['path']}: {e['message']}" for e in errors),
                              extra={"errors": errors})
        values = dict(data)
        url = values.pop("url", None)
        base = cls.from_url(url) if url else cls()
        return replace(base, **values)

    @classmethod
    def from_url(cls, url: str) -> ConnectionProfile:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ActionError("INVALID_INPUT", "a connection URL must start with postgresql://")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        values: dict[str, Any] = {}
        try:
            port = parts.port
        except ValueError:
            raise ActionError("INVALID_INPUT", "the connection URL has an invalid port") from None
        if parts.hostname:
            values["host"] = unquote(parts.hostname)
        if port:
            values["port"] = port
        if parts.path.strip("/"):
            values["database"] = unquote(parts.path.lstrip("/"))
        if parts.username:
            values["username"] = unquote(parts.username)
        if parts.password is not None:
            values["password"] = unquote(parts.password)
        for key, field in _URL_QUERY_KEYS.items():
            if key in query:
                values[field] = query[key]
        if "host" in query:  # ?host=/var/run/postgresql (Unix socket)
            values["host"] = query["host"]
        if "connectTimeout" in values:
            values["connectTimeout"] = float(values["connectTimeout"])
        if "options" in query and "search_path=" in query["options"]:
            values["schema"] = query["options"].split("search_path=")[1].split()[0]
        return replace(cls(), **values)


def _safe_message(error: jsonschema.ValidationError) -> str:
    """jsonschema quotes the offending value; never echo a secret field's value."""
    if error.absolute_path and error.absolute_path[-1] in ("password", "url"):
        return f"invalid value ({error.validator} check failed)"
    return error.message


def load_profile(spec: str | dict[str, Any] | ConnectionProfile) -> ConnectionProfile:
    """A profile from an object, a ``postgresql://`` URL, or the path of a YAML/JSON file."""
    if isinstance(spec, ConnectionProfile):
        return spec
    if not isinstance(spec, (str, dict)):
        raise ActionError("INVALID_INPUT", "the connection must be a postgresql:// URL, a profile object "
                                           "or the path of a profile file", extra={"field": "connection"})
    if isinstance(spec, dict):
        try:
            key = tuple(spec.items())  # a host passes the same object each run: same order
            hash(key)
        except TypeError:  # an unhashable value: it will fail validation anyway
            return ConnectionProfile.from_dict(spec)
        return _profile_from_items(key)
    if spec.startswith(("postgresql://", "postgres://")):
        return _profile_from_url(spec)
    path = Path(spec)
    if not path.is_file():
        raise ActionError("INVALID_INPUT", f"the connection {spec!r} is neither a postgresql:// URL "
                                           "nor a readable profile file", extra={"field": "connection"})
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ActionError("INVALID_INPUT", f"the profile file {path.name} could not be read: "
                                           f"{type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise ActionError("INVALID_INPUT", f"the profile file {path.name} must hold an object")
    return ConnectionProfile.from_dict(data)


# A flow engine passes the same connection object on every run: parse and validate it once.
@lru_cache(maxsize=256)
def _profile_from_items(items: tuple[tuple[str, Any], ...]) -> ConnectionProfile:
    return ConnectionProfile.from_dict(dict(items))


@lru_cache(maxsize=256)
def _profile_from_url(url: str) -> ConnectionProfile:
    return ConnectionProfile.from_url(url)
