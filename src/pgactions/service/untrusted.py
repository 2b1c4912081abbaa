"""Profiles from callers are untrusted: they may not reach the service's files, credentials or network.

A connection profile received over HTTP (inline, or stored by a caller) goes through
:func:`vet_profile` before it is used.  It is parsed without the environment (no PG* variable fills
a field, and libpq is kept from reading PGPASSWORD, ~/.pgpass, ~/.postgresql/* … when connecting:
``ConnectionProfile.environment`` is False), then refused when it names

* a file: ``sslRootCert`` must be PEM text or ``"system"``, ``sslCert`` / ``sslKey`` PEM text;
  ``passfile``, ``service``, ``sslcrl``, ``sslkeylogfile`` … are not allowed libpq options;
* a Unix socket: a host that starts with ``/`` or ``@`` (also from ``?host=/var/run/…`` or a
  percent-encoded URL host), or an empty entry of a host list (libpq reads it as the default socket);
* a libpq option outside :data:`ALLOWED_OPTIONS`;
* an address the :class:`HostPolicy` denies, or one outside its allow list: every host is
  resolved (all its addresses) and every address checked, then *pinned*: the returned profile
  carries ``hostaddr`` with exactly the checked addresses, so libpq connects to them without asking
  DNS again (no rebinding window), while ``host`` stays for TLS (SNI, verify-full) and messages.

The checks apply to the parsed profile, whatever part of it a value came from (a field, the URL's
query string, ``extraOptions``).  Each refusal is ``INVALID_CONNECTION`` whose ``field`` names the
value as the caller wrote it (``sslKey``, ``url: sslkey``, ``extraOptions/hostaddr``, ``host``);
a host name that does not resolve is ``HOST_NOT_FOUND``.  See docs/service-untrusted.md.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from pgactions.connection.pemfiles import is_pem_text
from pgactions.connection.profiles import ConnectionProfile, field_origins, load_profile
from pgactions.spec.errors import ActionError

__all__ = ["ALLOWED_OPTIONS", "DEFAULT_DENY", "HostPolicy", "unsealed_environment", "vet_profile"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

# Addresses no caller's profile may reach unless the operator turns the defaults off: the cloud
# providers' instance-metadata and host endpoints (they hand out the host's own credentials) and
# the addresses that mean "this machine" without saying loopback.
DEFAULT_DENY: tuple[tuple[str, str], ...] = (
    ("169.254.0.0/16", "IPv4 link-local: AWS, GCP, Azure, OpenStack, Oracle and DigitalOcean metadata "
                       "(169.254.169.254), AWS ECS task metadata (169.254.170.2)"),
    ("fe80::/10", "IPv6 link-local"),
    ("fd00:ec2::254/128", "AWS instance metadata over IPv6"),
    ("100.100.100.200/32", "Alibaba Cloud metadata"),
    ("168.63.129.16/32", "Azure WireServer / host agent"),
    ("192.0.0.192/32", "Oracle Cloud legacy metadata"),
    ("0.0.0.0/8", "'this host': connecting to 0.0.0.0 reaches the service's own loopback"),
    ("::/128", "the IPv6 unspecified address: reaches the service's own loopback"),
)

# The libpq options (extraOptions, or a URL's query keywords without a field of their own) a caller
# may set.  Everything else is refused: options naming files (passfile, sslcrl, sslkeylogfile …),
# reading the service's configuration (service), using its Kerberos credentials (gssencmode,
# krbsrvname, require_auth …), setting server settings (options), or fetching URLs (oauth_*).
ALLOWED_OPTIONS: frozenset[str] = frozenset({
    "hostaddr",  # checked against the policy like a host
    "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout",
    "target_session_attrs", "load_balance_hosts",
    "channel_binding", "sslnegotiation", "sslcertmode", "sslsni",
    "ssl_min_protocol_version", "ssl_max_protocol_version",
})
_REFUSED_WHY = {
    "passfile": "names a file on the service's host",
    "service": "reads the service's own pg_service.conf",
    "servicefile": "names a file on the service's host",
    "sslcrl": "names a file on the service's host",
    "sslcrldir": "names a folder on the service's host",
    "sslkeylogfile": "writes a file on the service's host",
    "requirepeer": "applies to Unix sockets only, which are not allowed",
    "options": "sets server settings for the session; use the schema field for the search path",
    "gssencmode": "would use the service's own Kerberos credentials",
    "gssdelegation": "would use the service's own Kerberos credentials",
    "gsslib": "would use the service's own Kerberos/SSPI credentials",
    "krbsrvname": "would use the service's own Kerberos credentials",
    "require_auth": "is set by the service (no GSS or SSPI authentication)",
    "oauth_issuer": "would make the service run an OAuth flow", "oauth_client_id": "would make the service run an OAuth flow",
    "oauth_client_secret": "would make the service run an OAuth flow", "oauth_scope": "would make the service run an OAuth flow",
    "replication": "asks for a replication connection, which actions do not use",
}
_WINDOWS_PATH = re.compile(r"^[A-Za-z]:[\\/]")
_NAME = re.compile(r"^(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*$")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _system_resolver(host: str, port: int) -> list[str]:
    """Every address *host* resolves to (TCP), in the resolver's order."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                           proto=socket.IPPROTO_TCP)]


def _normal_name(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _embedded(address: IPAddress) -> list[IPAddress]:
    """The address, and the IPv4 address an IPv6 one reaches (IPv4-mapped ::ffff:a.b.c.d, NAT64
    64:ff9b::a.b.c.d), so a denied IPv4 address cannot be written in IPv6."""
    found: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        plain = ipaddress.IPv6Address(int(address))  # without a scope: comparisons ignore it
        if plain.ipv4_mapped is not None:
            found.append(plain.ipv4_mapped)
        elif plain in _NAT64:
            found.append(ipaddress.IPv4Address(int(plain) & 0xFFFFFFFF))
        found[0] = plain
    return found


@dataclass(frozen=True)
class _Rule:
    text: str
    network: IPNetwork | None = None
    name: str | None = None  # "db.example.com", or "*.example.com" for any name below it

    def matches_name(self, host: str) -> bool:
        if self.name is None:
            return False
        if self.name.startswith("*."):
            return host.endswith(self.name[1:])
        return host == self.name

    def matches_address(self, address: IPAddress) -> bool:
        return self.network is not None and any(a in self.network for a in _embedded(address)
                                                if a.version == self.network.version)


def _rule(text: str) -> _Rule:
    entry = text.strip()
    try:
        return _Rule(entry, network=ipaddress.ip_network(entry.strip("[]"), strict=False))
    except ValueError:
        pass
    name = _normal_name(entry)
    if not name or not _NAME.match(name):
        raise ValueError(f"{text!r} is neither a host name (db.example.com, *.example.com) nor an "
                         "IP address or CIDR (10.0.0.0/8, fd00::/8)")
    return _Rule(entry, name=name)


class HostPolicy:
    """Which hosts a caller's profile may connect to.

    *allow*: names or CIDRs (``db.example.com``, ``*.example.com``, ``10.0.0.0/8``, ``2001:db8::1``);
    None allows every address not denied.  A name in the allow list allows the addresses that name
    resolves to (when the caller wrote that name as the host and the service resolved it: not with
    a ``hostaddr`` of the caller's); a CIDR allows the addresses in it, however they were named.
    *deny*: names or CIDRs, checked first, in addition to :data:`DEFAULT_DENY` unless
    *default_deny* is False.  A bad entry raises ValueError naming it.  *resolver* (host, port) →
    addresses replaces the system's DNS (tests).
    """

    def __init__(self, allow: Iterable[str] | None = None, deny: Iterable[str] = (), *,
                 default_deny: bool = True, resolver: Resolver | None = None) -> None:
        self.allow: tuple[_Rule, ...] | None = None if allow is None else tuple(_rule(e) for e in allow)
        defaults = tuple(_rule(cidr) for cidr, _why in DEFAULT_DENY) if default_deny else ()
        self.deny: tuple[_Rule, ...] = defaults + tuple(_rule(e) for e in deny)
        self.resolve: Resolver = resolver or _system_resolver

    def __repr__(self) -> str:
        allow = None if self.allow is None else [r.text for r in self.allow]
        return f"HostPolicy(allow={allow!r}, deny={[r.text for r in self.deny]!r})"

    def denied_name(self, host: str) -> _Rule | None:
        return next((r for r in self.deny if r.matches_name(host)), None)

    def refusal(self, address: IPAddress, host: str | None) -> str | None:
        """Why *address* may not be reached (None: it may).  *host*: the name it was resolved from."""
        rule = next((r for r in self.deny if r.matches_address(address)), None)
        if rule is not None:
            return f"denied ({rule.text})"
        if self.allow is None:
            return None
        if any(r.matches_address(address) for r in self.allow):
            return None
        if host is not None and any(r.matches_name(host) for r in self.allow):
            return None
        return "not among the hosts the service may connect to (--allow-hosts)"


def unsealed_environment() -> list[str]:
    """The libpq variables set in this process that libpq still reads for a caller's profile:
    PGSERVICE (a service group can only fill what a profile leaves unset, which is little) and the
    files it points to.  For the service to warn about at start."""
    return sorted(v for v in ("PGSERVICE", "PGSERVICEFILE", "PGSYSCONFDIR", "PGMINPROTOCOLVERSION",
                              "PGMAXPROTOCOLVERSION") if os.environ.get(v))


class _Problems:
    def __init__(self) -> None:
        self.found: list[dict[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.found.append({"path": path, "message": message})

    def raise_any(self) -> None:
        if self.found:
            raise ActionError("INVALID_CONNECTION", "; ".join(f"{p['path']}: {p['message']}" for p in self.found),
                              extra={"field": self.found[0]["path"], "errors": self.found})


def vet_profile(spec: str | dict[str, Any], policy: HostPolicy) -> ConnectionProfile:
    """A caller's connection (a ``postgresql://`` URL or a profile object) as a profile that reads
    nothing from the service's environment or files and connects only to the addresses *policy*
    allows, pinned with ``hostaddr``.  Raises ``INVALID_CONNECTION`` (``field`` names what is
    refused) or ``HOST_NOT_FOUND``."""
    if isinstance(spec, str) and not spec.startswith(("postgresql://", "postgres://")):
        raise ActionError("INVALID_CONNECTION", "connection: must be a postgresql:// URL or a profile object "
                                                "(the service reads no profile files)",
                          extra={"field": "connection", "errors": [{"path": "connection", "message": "not a URL"}]})
    if not isinstance(spec, (str, dict)):
        raise ActionError("INVALID_CONNECTION", "connection: must be a postgresql:// URL or a profile object",
                          extra={"field": "connection", "errors": [{"path": "connection", "message": "not an object"}]})
    profile = load_profile(spec, environment=False)  # validated; parsed once per distinct spec
    origins = field_origins(spec)
    problems = _Problems()
    _check_files(profile, origins, problems)
    options = dict(profile.extraOptions)
    for key in options:
        if key not in ALLOWED_OPTIONS:
            reason = (f"it {_REFUSED_WHY[key]}" if key in _REFUSED_WHY
                      else f"the libpq options a caller may set are {', '.join(sorted(ALLOWED_OPTIONS))}")
            problems.add(origins.get(f"extraOptions/{key}", f"extraOptions/{key}"), f"not allowed: {reason}")
    host_label = origins.get("host", "host")
    hosts = profile.host.split(",")
    for host in hosts:
        if not host.strip():
            problems.add(host_label, "an empty entry of a host list means the local Unix socket, which is not allowed")
        elif host.startswith(("/", "@")) or _WINDOWS_PATH.match(host):
            problems.add(host_label, "a Unix-socket folder is not allowed: give a host name or IP address")
    addr_label = origins.get("extraOptions/hostaddr", "extraOptions/hostaddr")
    given: list[str] | None = None
    if "hostaddr" in options:
        given = options["hostaddr"].split(",")
        if len(given) != len(hosts):
            problems.add(addr_label, f"must give one address per host ({len(hosts)})")
        for text in given:
            if _address(text) is None:
                problems.add(addr_label, "must hold IP addresses only")
    problems.raise_any()
    for host in hosts:
        rule = policy.denied_name(_normal_name(host))
        if rule is not None:
            problems.add(host_label, f"{host!r} is a host the service may not connect to (denied: {rule.text})")
    problems.raise_any()
    pinned_hosts: list[str] = []
    pinned_addresses: list[str] = []
    unresolved: str | None = None
    for index, host in enumerate(hosts):
        resolved_from: str | None = None
        if given is not None:
            addresses, label = [given[index].strip()], addr_label
        elif _address(host) is not None:
            addresses, label = [host], host_label
        else:
            try:
                addresses = policy.resolve(host, profile.port)
            except (OSError, UnicodeError):
                unresolved = unresolved or host
                continue
            label, resolved_from = host_label, _normal_name(host)
        for text in _stable_order(addresses):
            address = _address(text)
            why: str | None = "not an IP address" if address is None else policy.refusal(address, resolved_from)
            if why is not None:
                shown = f"{host!r} resolves to an address that is {why}" if resolved_from else f"{text} is {why}"
                problems.add(label, shown)
                break
            pinned_hosts.append(host)
            pinned_addresses.append(text)
    problems.raise_any()
    if not pinned_addresses:
        raise ActionError("HOST_NOT_FOUND", f"{unresolved!r} could not be resolved", extra={"field": host_label})
    options["hostaddr"] = ",".join(pinned_addresses)
    return replace(profile, host=",".join(pinned_hosts), extraOptions=tuple(sorted(options.items())))


def _check_files(profile: ConnectionProfile, origins: dict[str, str], problems: _Problems) -> None:
    """Certificates and keys as PEM text only (the CA also as "system"): never a file of the service's."""
    if profile.sslRootCert is not None and profile.sslRootCert != "system" and not is_pem_text(profile.sslRootCert):
        problems.add(origins.get("sslRootCert", "sslRootCert"),
                     'must be the CA certificate\'s PEM text or "system": the service reads no files named by a caller')
    for name, what in (("sslCert", "client certificate"), ("sslKey", "private key")):
        value = getattr(profile, name)
        if value is not None and not is_pem_text(value):
            problems.add(origins.get(name, name), f"must be the {what}'s PEM text: the service reads no files "
                                                  "named by a caller")


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _stable_order(addresses: list[str]) -> list[str]:
    """Distinct addresses, sorted within each family, families in the resolver's order: round-robin
    DNS then gives the same pinned profile (pools are kept per profile)."""
    families: dict[int, list[str]] = {}
    for text in addresses:
        address = _address(text)
        family = families.setdefault(address.version if address is not None else 0, [])
        if text not in family:
            family.append(text)
    return [text for family in families.values() for text in sorted(family, key=_sort_key)]


def _sort_key(text: str) -> tuple[int, str]:
    address = _address(text)
    return (int(address) if address is not None else 0, text)
