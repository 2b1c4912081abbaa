"""Connection profiles: a form's fields, a ``postgresql://`` URL, or a YAML/JSON file of either.

Where a value comes from, highest first: the profile's own fields, then its ``url``, then the
standard libpq environment variables (PGHOST, PGPORT …, unless the host sets
``PGACTIONS_IGNORE_PG_ENV=1``), then the defaults of ``schemas/connection.schema.json``.  The whole
result is validated once, so a bad value is reported under the name the user wrote it with
(``port``, ``url: sslmode``, ``PGPORT``).  Anything wrong with a connection — a malformed URL, a
bad field, an unreadable profile file — is one ``INVALID_CONNECTION`` :class:`ActionError`; no
other exception leaves :func:`load_profile`, and no error repeats the connection text as given
(it may hold a password).

Secrets (password, private key, key pass phrase, OAuth secret) live in the profile and nowhere
else: ``repr`` hides them and :meth:`ConnectionProfile.secrets` lets the error boundary scrub them
from anything shown to a user.

A profile from someone other than the host's operator (``pgactions serve``'s callers) is parsed
with ``environment=False``: no field is filled from the PG* variables, and the profile remembers
it, so :meth:`ConnectionProfile.connect_kwargs` also gives libpq an explicit value for every
keyword it would otherwise take from the environment or from the OS user's files (``PGPASSWORD``,
``~/.pgpass``, ``~/.postgresql/postgresql.crt`` and ``.key``, ``root.crt``, ``root.crl`` …): see
:data:`SEALED_OPTIONS`.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import jsonschema
import yaml

from pgactions.connection.pemfiles import is_pem_text, materialize
from pgactions.spec.errors import ActionError

__all__ = ["NO_FILE", "SEALED_OPTIONS", "ConnectionProfile", "field_origins", "forget_profiles", "load_profile",
           "pg_environment"]

# libpq keyword → profile field, for URL query strings and environment variables.
_LIBPQ_FIELDS = {
    "host": "host", "port": "port", "dbname": "database", "user": "username", "password": "password",
    "sslmode": "sslMode", "sslrootcert": "sslRootCert", "sslcert": "sslCert", "sslkey": "sslKey",
    "sslpassword": "sslPassword", "connect_timeout": "connectTimeout", "application_name": "applicationName",
}
_ENVIRONMENT = {
    "PGHOST": "host", "PGPORT": "port", "PGDATABASE": "database", "PGUSER": "username",
    "PGPASSWORD": "password", "PGSSLMODE": "sslMode", "PGSSLROOTCERT": "sslRootCert",
    "PGSSLCERT": "sslCert", "PGSSLKEY": "sslKey", "PGCONNECT_TIMEOUT": "connectTimeout",
    "PGAPPNAME": "applicationName",
}
_NUMERIC_FIELDS = {"port": int, "connectTimeout": int, "statementTimeout": float,
                   "maxConnections": int, "idleTimeout": float}
# libpq options whose values libpq itself would only refuse when connecting (and then in words
# that read like a network failure): checked here.  Enumerations are the union over libpq
# versions, so an older libpq may still refuse a newer value.
_INTEGER_OPTIONS = frozenset({"keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
                              "tcp_user_timeout", "sslcompression", "sslsni", "requiressl"})
_OPTION_VALUES = {
    "target_session_attrs": ("any", "read-write", "read-only", "primary", "standby", "prefer-standby"),
    "channel_binding": ("disable", "prefer", "require"),
    "gssencmode": ("disable", "prefer", "require"),
    "load_balance_hosts": ("disable", "random"),
    "sslcertmode": ("disable", "allow", "require"),
    "sslnegotiation": ("postgres", "direct"),
    "ssl_min_protocol_version": ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
    "ssl_max_protocol_version": ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
}
_INTEGER_TEXT = re.compile(r"\s*[-+]?\d+\s*")
# Fields whose values are never echoed (validation messages, reprs).
SECRET_FIELDS = frozenset({"password", "sslKey", "sslPassword", "url"})
# libpq options that hold secrets when passed through extraOptions.
_SECRET_OPTIONS = frozenset({"oauth_client_secret", "scram_client_key", "scram_server_key"})

# A file name that can never exist (nothing can be created under /dev/null): libpq, told to read a
# file there, finds none and goes on as if it was not given, instead of falling back to the OS
# user's own file (~/.pgpass, ~/.postgresql/postgresql.crt …).  An empty value would not do: libpq
# reads an empty sslcert, sslkey, sslrootcert, sslcrl or passfile as "use the default file".
NO_FILE = "/dev/null/no-file"
# For a profile parsed with environment=False: the value libpq gets for each keyword the profile
# does not set itself, so that libpq takes nothing from the process's environment (PGPASSWORD,
# PGHOSTADDR, PGSSLKEY …), from the OS user's files, or from the group of a pg_service.conf named by
# PGSERVICE (a service group only fills keywords still unset).  An empty value means "none" for these
# keywords.  Keywords libpq knows with an environment variable and not listed here get their
# compiled default (``Conninfo.get_defaults()``), or "" when there is none; see _sealed_options.
SEALED_OPTIONS: dict[str, str] = {
    "password": "",  # not PGPASSWORD; then libpq reads the passfile, which is NO_FILE
    "passfile": NO_FILE,  # not PGPASSFILE or ~/.pgpass
    "hostaddr": "",  # not PGHOSTADDR
    "sslcert": NO_FILE, "sslkey": NO_FILE,  # not PGSSLCERT/PGSSLKEY or ~/.postgresql/postgresql.crt/.key
    "sslrootcert": NO_FILE,  # not PGSSLROOTCERT or ~/.postgresql/root.crt (verify-ca/-full then need one given)
    "sslcrl": NO_FILE, "sslcrldir": "",  # not PGSSLCRL/PGSSLCRLDIR or ~/.postgresql/root.crl
    "sslpassword": "",  # never a prompt
    "options": "", "client_encoding": "", "requirepeer": "", "gsslib": "", "ssl_max_protocol_version": "",
    "sslcertmode": "allow",
    # Never the service's own Kerberos/SSPI credentials: no GSS encryption, no GSS or SSPI authentication.
    "gssencmode": "disable", "gssdelegation": "0", "require_auth": "!gss,!sspi",
    "oauth_issuer": "", "oauth_client_id": "", "oauth_client_secret": "", "oauth_scope": "",
    "sslkeylogfile": "", "replication": "",
}
# Keywords libpq reads from the environment that are left to it: "service" (PGSERVICE; an empty value
# would mean a service named "", and once every other keyword is set a service group has nothing
# left to fill) and the protocol versions (no empty value; only which protocol version is spoken).
UNSEALED_OPTIONS = frozenset({"service", "min_protocol_version", "max_protocol_version"})


@dataclass(frozen=True)
class ConnectionProfile:
    host: str = "localhost"
    port: int = 5432
    database: str = "postgres"
    username: str = "postgres"
    password: str | None = None
    sslMode: str = "prefer"
    sslRootCert: str | None = None
    sslCert: str | None = None
    sslKey: str | None = None
    sslPassword: str | None = None
    connectTimeout: int = 10
    statementTimeout: float | None = None
    schema: str | None = None
    applicationName: str = "pgactions"
    maxConnections: int = 5
    idleTimeout: float = 300
    pgbouncer: bool = False
    # Other libpq keywords (keepalives_idle, target_session_attrs, hostaddr …), sorted pairs so the
    # profile stays hashable (pools are cached per profile).
    extraOptions: tuple[tuple[str, str], ...] = ()
    # False: parsed without the PG* variables, and libpq is kept from reading the environment and the
    # OS user's files when connecting (SEALED_OPTIONS).  Not a field of the connection schema.
    environment: bool = True

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value == () or (f.name == "environment" and value):
                continue
            if f.name in SECRET_FIELDS:
                value = "***"
            elif f.name == "extraOptions":
                value = {k: ("***" if k in _SECRET_OPTIONS else v) for k, v in value}
            shown.append(f"{f.name}={value!r}" if value != "***" else f"{f.name}=***")
        return f"ConnectionProfile({', '.join(shown)})"

    __str__ = __repr__

    def __hash__(self) -> int:
        # Pools, limits and caches are keyed by profile, several lookups per action: the hash of
        # twenty fields is computed once (frozen: the fields never change).
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(tuple(getattr(self, f.name) for f in fields(self)))
            object.__setattr__(self, "_hash", cached)
        return cached  # type: ignore[no-any-return]

    def secrets(self) -> tuple[str, ...]:
        """Every secret value, for the error boundary to scrub (computed once per profile)."""
        cached = self.__dict__.get("_secrets")
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        found = [self.password, self.sslPassword]
        if self.sslKey and is_pem_text(self.sslKey):
            found.append(self.sslKey)
            found.extend(line for line in self.sslKey.splitlines() if len(line) >= 16)
        found.extend(v for k, v in self.extraOptions if k in _SECRET_OPTIONS)
        secrets = tuple(s for s in found if s)
        object.__setattr__(self, "_secrets", secrets)  # frozen: written past the dataclass's guard
        return secrets

    @property
    def tls_files(self) -> dict[str, str]:
        """sslrootcert/sslcert/sslkey as file paths (PEM text written to private files)."""
        files = {}
        for keyword, value in (("sslrootcert", self.sslRootCert), ("sslcert", self.sslCert),
                               ("sslkey", self.sslKey)):
            if value:
                files[keyword] = value if value == "system" else materialize(value)
        return files

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for psycopg.connect (libpq names)."""
        kwargs: dict[str, Any] = dict(self.extraOptions)
        kwargs.update({
            "host": self.host, "port": self.port, "dbname": self.database, "user": self.username,
            "sslmode": self.sslMode, "connect_timeout": int(self.connectTimeout),
            "application_name": self.applicationName[:63],
        })
        if self.password is not None:
            kwargs["password"] = self.password
        if self.sslPassword is not None:
            kwargs["sslpassword"] = self.sslPassword
        kwargs.update(self.tls_files)
        if not self.environment:
            for keyword, value in _sealed_options().items():
                kwargs.setdefault(keyword, value)
        return kwargs

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, environment: bool = True) -> ConnectionProfile:
        """A validated profile.  *environment* False: no field is taken from the PG* variables (nor
        PGACTIONS_IGNORE_PG_ENV consulted), and the profile keeps libpq from reading them too."""
        values: dict[str, Any] = {}
        origins: dict[str, str] = {}
        url_options: dict[str, Any] = {}
        if isinstance(data.get("url"), str) and data["url"].startswith(_URL_PREFIXES):
            for key, value in _parse_url(data["url"]).items():
                values[key], origins[key] = value, f"url: {key}"
            url_options = dict(values.get("extraOptions", {}))
        for key, value in data.items():
            if key == "extraOptions" and url_options and isinstance(value, dict):
                value = {**url_options, **value}  # the URL's libpq options, then the field's
            if key != "url":
                values[key], origins[key] = value, key
        for var, key in (_environment_defaults() if environment else {}).items():
            if key not in values:
                values[key], origins[key] = os.environ[var], var
        for key, kind in _NUMERIC_FIELDS.items():
            if origins.get(key, key) != key and isinstance(values.get(key), str):
                values[key] = _number(values[key], kind)  # URL and environment values are text
        _validate(data, values, origins, url_options)
        values.pop("url", None)
        options = values.pop("extraOptions", {})
        return cls(**values, extraOptions=tuple(sorted((k, _option_text(v)) for k, v in options.items())),
                   environment=environment)

    @classmethod
    def from_url(cls, url: str, *, environment: bool = True) -> ConnectionProfile:
        return cls.from_dict({"url": url}, environment=environment)


_URL_PREFIXES = ("postgresql://", "postgres://")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_SEARCH_PATH = re.compile(r"(?:-c\s*|--)search_path=(\S*)")


def _parse_url(url: str) -> dict[str, Any]:
    """A postgresql:// URL as profile fields; libpq query keywords without a field go to extraOptions."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # never echo urllib's message: some versions quote the netloc
        reason = ("an IPv6 host must be written in brackets, e.g. [::1]" if "IPv6" in str(exc)
                  else "it cannot be parsed")
        raise _invalid([{"path": "url", "message": f"not a valid postgresql:// URL: {reason}"}]) from None
    values: dict[str, Any] = {}
    port: int | str | None
    hosts = parts.netloc.rpartition("@")[2]  # after the '@': never the password
    if "," in hosts:  # libpq's multi-host form: h1:5432,h2:5433 (urllib reads it as one host)
        values["host"], port = _host_list(hosts)
    else:
        try:
            port = parts.port
        except ValueError:
            port = hosts.rsplit(":", 1)[-1]  # kept as text: validation names it
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
    extra: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _LIBPQ_FIELDS:
            values[_LIBPQ_FIELDS[key]] = value
        elif key == "pgbouncer":  # Prisma's and Supabase's convention
            values["pgbouncer"] = value.lower() in ("true", "1", "yes", "on")
        elif key == "options" and _SEARCH_PATH.search(value):
            # "-c search_path=sales,public": the first schema becomes the profile's schema; any
            # other settings stay libpq options.
            schema = _SEARCH_PATH.search(value).group(1).split(",")[0].strip('"')  # type: ignore[union-attr]
            if schema:
                values["schema"] = schema
            rest = _SEARCH_PATH.sub("", value).strip()
            if rest:
                extra[key] = rest
        else:
            extra[key] = value
    if extra:
        values["extraOptions"] = extra
    return values


def _host_list(netloc_hosts: str) -> tuple[str, str | None]:
    """``h1:5432,[::1]:5433,h3`` → ``("h1,::1,h3", port)``.  A profile has one port: hosts given
    with different ports are refused (rather than read wrongly)."""
    names, ports = [], set()
    for item in netloc_hosts.split(","):
        match = re.fullmatch(r"\[([^\]]*)\](?::(.*))?|([^:\[\]]*)(?::(.*))?", item)
        if match is None:
            raise _invalid([{"path": "url", "message": "not a valid postgresql:// URL: a host of the host list "
                                                       "cannot be read (IPv6 addresses go in brackets)"}])
        names.append(unquote(match.group(1) or match.group(3) or ""))
        ports.add(match.group(2) or match.group(4) or "")
    if "" in names:
        raise _invalid([{"path": "url", "message": "not a valid postgresql:// URL: the host list has an empty entry"}])
    given = ports - {""}
    if len(given) > 1 or (given and "" in ports):
        raise _invalid([{"path": "url", "message": "the hosts of a multi-host URL must share one port here "
                                                   "(h1:5433,h2:5433), or each host gets a profile of its own"}])
    return ",".join(names), (given.pop() if given else None)


def field_origins(spec: str | dict[str, Any]) -> dict[str, str]:
    """Where each value a profile object or URL sets comes from, as errors name it: profile field →
    ``"host"`` or ``"url: host"``; libpq option → ``"extraOptions/hostaddr"`` or ``"url: hostaddr"``
    (keys ``"extraOptions/<keyword>"``).  For a spec that already passed validation."""
    data = {"url": spec} if isinstance(spec, str) else spec
    origins: dict[str, str] = {}
    url = data.get("url")
    if isinstance(url, str) and url.startswith(_URL_PREFIXES):
        keywords = {f: k for k, f in _LIBPQ_FIELDS.items()} | {"schema": "options"}  # ?options=-c search_path=…
        for key, value in _parse_url(url).items():
            if key == "extraOptions":
                origins.update({f"extraOptions/{k}": f"url: {k}" for k in value})
            else:
                origins[key] = f"url: {keywords.get(key, key)}"
    for key, value in data.items():
        if key == "extraOptions" and isinstance(value, dict):
            origins.update({f"extraOptions/{k}": f"extraOptions/{k}" for k in value})
        elif key != "url":
            origins[key] = key
    return origins


def _option_text(value: Any) -> str:
    return str(int(value)) if isinstance(value, bool) else str(value)  # libpq reads booleans as 1/0


def _number(text: str, kind: type) -> Any:
    try:
        return kind(text)
    except ValueError:
        return text  # left as text: validation reports it under its origin


def _environment_defaults() -> dict[str, str]:
    if os.environ.get("PGACTIONS_IGNORE_PG_ENV") == "1":
        return {}
    return {var: key for var, key in _ENVIRONMENT.items() if os.environ.get(var)}


def pg_environment() -> list[str]:
    """The libpq variables (PGHOST, PGPORT …) that are set and would fill a profile's fields."""
    return sorted(_environment_defaults())


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    from pgactions.spec.manifests import load_schema

    return jsonschema.Draft202012Validator(load_schema("connection.schema.json"))


def _validate(data: dict[str, Any], values: dict[str, Any], origins: dict[str, str],
              url_options: dict[str, Any]) -> None:
    """Check the merged values (and the URL's form); report each problem under its origin."""
    merged = dict(values)
    if "url" in data:
        merged["url"] = data["url"]
    problems = []
    for error in sorted(_validator().iter_errors(merged), key=lambda e: [str(p) for p in e.absolute_path]):
        path = list(error.absolute_path)
        field = str(path[0]) if path else ""
        label = origins.get(field, field) if field else "(connection)"
        if len(path) > 1:
            label += "/" + "/".join(map(str, path[1:]))
        problems.append({"path": label, "message": _safe_message(error)})
    problems.extend(_value_problems(values, origins))
    problems.extend(_option_problems(values.get("extraOptions"), url_options))
    if problems:
        raise _invalid(problems)


def _invalid(problems: list[dict[str, str]]) -> ActionError:
    """One INVALID_CONNECTION error listing every problem (paths and messages never hold a secret)."""
    return ActionError("INVALID_CONNECTION", "; ".join(f"{p['path']}: {p['message']}" for p in problems),
                       extra={"field": problems[0]["path"], "errors": problems})


def _value_problems(values: dict[str, Any], origins: dict[str, str]) -> list[dict[str, str]]:
    """What the schema cannot say: libpq takes no NUL character, and NaN or Infinity is no number."""
    problems = []
    for key, value in values.items():
        if isinstance(value, str) and "\x00" in value:
            problems.append({"path": origins.get(key, key), "message": "contains a NUL character"})
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append({"path": origins.get(key, key), "message": "must be a finite number"})
    options = values.get("extraOptions")
    if isinstance(options, dict):
        for key, value in options.items():
            if (isinstance(value, str) and "\x00" in value) or (isinstance(value, float) and not math.isfinite(value)):
                problems.append({"path": f"extraOptions/{key}", "message": "is not a usable libpq value"})
    return problems


def _option_problems(options: Any, url_options: dict[str, Any]) -> list[dict[str, str]]:
    if not isinstance(options, dict):
        return []
    problems = []
    for key in options:
        label = f"url: {key}" if key in url_options and options[key] == url_options[key] else f"extraOptions/{key}"
        if key in _LIBPQ_FIELDS:
            problems.append({"path": label, "message": f"use the {_LIBPQ_FIELDS[key]} field instead"})
        elif key not in _libpq_keywords():
            problems.append({"path": label, "message": "not a libpq connection option"})
        elif key in _INTEGER_OPTIONS and not _INTEGER_TEXT.fullmatch(_option_text(options[key])):
            problems.append({"path": label, "message": "must be a whole number"})
        elif key in _OPTION_VALUES and _option_text(options[key]) not in _OPTION_VALUES[key]:
            problems.append({"path": label, "message": f"must be one of {', '.join(_OPTION_VALUES[key])}"})
    return problems


@lru_cache(maxsize=1)
def _libpq_keywords() -> frozenset[str]:
    from psycopg import pq

    return frozenset(d.keyword.decode() for d in pq.Conninfo.get_defaults())


@lru_cache(maxsize=1)
def _sealed_options() -> dict[str, str]:
    """SEALED_OPTIONS for the keywords this libpq knows, plus every other keyword it would read from
    an environment variable, at its compiled default."""
    from psycopg import pq

    sealed = {k: v for k, v in SEALED_OPTIONS.items() if k in _libpq_keywords()}
    for option in pq.Conninfo.get_defaults():
        keyword = option.keyword.decode()
        if option.envvar and keyword not in sealed and keyword not in UNSEALED_OPTIONS:
            sealed[keyword] = option.compiled.decode() if option.compiled is not None else ""
    return sealed


def _safe_message(error: jsonschema.ValidationError) -> str:
    """jsonschema quotes the offending value; never echo a secret field's value."""
    path = list(error.absolute_path)
    secret = bool(path) and (path[0] in SECRET_FIELDS or (len(path) > 1 and path[1] in _SECRET_OPTIONS))
    if path == ["url"] and error.validator == "pattern":
        return "must start with postgresql:// or postgres://"
    if secret or error.validator == "additionalProperties" and "password" in error.message.lower():
        return f"invalid value ({error.validator} check failed)"
    return error.message


def load_profile(spec: str | dict[str, Any] | ConnectionProfile, *, environment: bool = True) -> ConnectionProfile:
    """A profile from an object, a ``postgresql://`` URL, or the path of a YAML/JSON file.

    *environment* False: nothing is taken from the PG* variables, and libpq is kept from reading
    them (and the OS user's ~/.pgpass, client certificate …) when connecting.  It does not stop a
    string from being read as a file name: a caller's profile goes through
    ``pgactions.service.untrusted.vet_profile``, which allows URLs and objects only.
    """
    if isinstance(spec, ConnectionProfile):
        return spec if spec.environment or environment else replace(spec, environment=False)
    if not isinstance(spec, (str, dict)):
        raise _invalid([{"path": "connection", "message": "must be a postgresql:// URL, a profile object "
                                                          "or the path of a profile file"}])
    if isinstance(spec, dict):
        try:
            key = tuple((k, _freeze(v)) for k, v in spec.items())  # a host passes the same object each run
            hash(key)
        except TypeError:  # an unhashable value: it will fail validation anyway
            return ConnectionProfile.from_dict(spec, environment=environment)
        return _profile_from_items(key, environment)
    if spec.startswith(_URL_PREFIXES):
        return _profile_from_items((("url", spec),), environment)
    scheme = _SCHEME.match(spec)
    if scheme and spec[scheme.end():].startswith("//"):
        raise _invalid([{"path": "url", "message": f"the scheme {scheme.group(1)}:// is not supported: "
                                                   "write postgresql://user:password@host:5432/database"}])
    return _profile_from_file(spec, environment)


def _freeze(value: Any) -> Any:
    return tuple(sorted(value.items())) if isinstance(value, dict) else value


def _profile_from_file(spec: str, environment: bool = True) -> ConnectionProfile:
    """A YAML or JSON profile file.  Errors name the file only when the text plainly is a file name
    (a mistyped URL may hold a password) and never quote the file's content."""
    path = Path(spec)
    named = path.suffix.lower() in (".json", ".yaml", ".yml") and "@" not in spec and ":" not in spec
    shown = f"profile file {spec}" if named else "profile file"
    try:
        if not path.is_file():
            what = f"there is no {shown}" if named and not path.exists() else \
                "neither a postgresql:// URL nor the path of a readable profile file (YAML or JSON)"
            raise _invalid([{"path": "connection", "message": what}])
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _invalid([{"path": "connection", "message": f"the {shown} is not UTF-8 text"}]) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise _invalid([{"path": "connection", "message": f"the {shown} cannot be read: {reason}"}]) from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise _invalid([{"path": "connection", "message": f"the {shown} is not valid JSON "
                                                          f"(line {exc.lineno}, column {exc.colno})"}]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise _invalid([{"path": "connection", "message": f"the {shown} is not valid YAML{where}"}]) from None
    except (ValueError, RecursionError):
        raise _invalid([{"path": "connection", "message": f"the {shown} cannot be parsed"}]) from None
    if not isinstance(data, dict):
        raise _invalid([{"path": "connection", "message": f"the {shown} must hold one object of connection "
                                                          "fields (host, port, database …) or a url"}])
    return ConnectionProfile.from_dict(data, environment=environment)


def forget_profiles() -> None:
    """Parse every profile afresh from now on (after the PG* environment variables changed)."""
    _profile_from_items.cache_clear()


# A flow engine passes the same connection object on every run: parse and validate it once.
# The PG* environment variables are read then (reading them on every run cost more than the
# rest of the lookup), so a profile seen before keeps the defaults it was parsed with.
@lru_cache(maxsize=256)
def _profile_from_items(items: tuple[tuple[str, Any], ...], environment: bool = True) -> ConnectionProfile:
    return ConnectionProfile.from_dict({k: dict(v) if k == "extraOptions" and isinstance(v, tuple) else v
                                        for k, v in items}, environment=environment)
