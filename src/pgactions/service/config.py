"""The service's settings: defaults, then the ``--config`` YAML file, then the flags.

Closed by default: loopback bind, auth on, no CORS origins.  The file's keys are described by
``schemas/service-config.schema.json`` (an unknown key is an error, not silently ignored).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from pgactions.spec.manifests import data_dir, load_manifests

__all__ = ["ConfigError", "ServiceConfig", "load_config"]

class ConfigError(Exception):
    """The configuration cannot be used: the message says which key and why."""


@dataclass(frozen=True)
class ServiceConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    threads: int = 32
    state_dir: str | None = None
    state_url: str | None = None
    auth_enabled: bool = True
    jwt: dict[str, Any] | None = None  # the auth.jwt block as written
    cors_origins: tuple[str, ...] = ()
    body_bytes: int = 20 * 1024 * 1024
    body_seconds: float = 30.0
    idempotent_bytes: int = 1024 * 1024
    per_connection: int | None = None
    max_result_bytes: int = 10 * 1024 * 1024
    timeout: float = 60.0
    allow_hosts: tuple[str, ...] | None = None
    deny_hosts: tuple[str, ...] = ()
    toolsets: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _schema_path() -> Path:
    return data_dir("schemas") / "service-config.schema.json"


def _from_file(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config: {path} is not valid YAML ({exc.__class__.__name__})") from None
    validator = jsonschema.Draft202012Validator(json.loads(_schema_path().read_text()))
    problems = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if problems:
        first = problems[0]
        where = ".".join(map(str, first.absolute_path)) or "(top level)"
        raise ConfigError(f"--config: {path}: {where}: {_schema_message(first)}")
    return data  # type: ignore[no-any-return]


def _schema_message(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        return f"unknown key ({error.message.split('(')[-1].rstrip(')')})"
    if error.validator == "minLength" and error.absolute_path and error.absolute_path[-1] == "secret":
        return "the HS256 secret must be at least 32 characters"
    return str(error.message)[:200]  # never the whole instance (it may be a secret)


def load_config(args: argparse.Namespace) -> ServiceConfig:
    """Defaults ← the file (``--config``) ← the flags."""
    config = ServiceConfig()
    data = _from_file(args.config) if getattr(args, "config", None) else {}
    auth, limits = data.get("auth", {}), data.get("limits", {})
    config = replace(
        config,
        host=data.get("host", config.host), port=data.get("port", config.port),
        workers=data.get("workers", config.workers), threads=data.get("threads", config.threads),
        state_dir=data.get("stateDir"), state_url=data.get("stateUrl"),
        auth_enabled=auth.get("enabled", True), jwt=auth.get("jwt"),
        cors_origins=tuple(data.get("cors", {}).get("origins", ())),
        body_bytes=limits.get("bodyBytes", config.body_bytes), per_connection=limits.get("perConnection"),
        body_seconds=float(limits.get("bodySeconds", config.body_seconds)),
        idempotent_bytes=limits.get("idempotentBytes", config.idempotent_bytes),
        max_result_bytes=limits.get("maxResultBytes", config.max_result_bytes),
        timeout=float(limits.get("timeout", config.timeout)),
        allow_hosts=tuple(data["allowHosts"]) if "allowHosts" in data else None,
        deny_hosts=tuple(data.get("denyHosts", ())),
        toolsets={name: tuple(ids) for name, ids in data.get("toolsets", {}).items()},
    )
    flags: dict[str, Any] = {}
    for flag, name in (("host", "host"), ("port", "port"), ("workers", "workers"),
                       ("state_dir", "state_dir"), ("state_url", "state_url")):
        value = getattr(args, flag, None)
        if value is not None:
            flags[name] = value
    if getattr(args, "state_dir", None):
        flags["state_url"] = None
    if getattr(args, "state_url", None):
        flags["state_dir"] = None
    if getattr(args, "no_auth", False):
        flags["auth_enabled"] = False
    if getattr(args, "allow_hosts", None) is not None:
        flags["allow_hosts"] = tuple(args.allow_hosts)
    if getattr(args, "deny_hosts", None) is not None:
        flags["deny_hosts"] = tuple(args.deny_hosts)
    config = replace(config, **flags)
    _check(config)
    return config


def _check(config: ServiceConfig) -> None:
    if config.state_dir and config.state_url:
        raise ConfigError("give stateDir or stateUrl, not both")
    if config.jwt is not None and bool(config.jwt.get("secret")) == bool(config.jwt.get("jwksFile")):
        raise ConfigError("auth.jwt needs exactly one of secret (HS256) or jwksFile (RS256)")
    if not 0 <= config.port <= 65535:
        raise ConfigError(f"port {config.port} is not a TCP port")
    if config.workers < 1:
        raise ConfigError("workers must be at least 1")
    known = set(load_manifests())
    for name, ids in config.toolsets.items():
        unknown = sorted(set(ids) - known)
        if unknown:
            raise ConfigError(f"toolsets.{name}: unknown action ids {', '.join(unknown)}")
