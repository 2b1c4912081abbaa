"""Look at a server's TLS the way a careful DBA would: protocol, cipher and the certificate itself.

libpq reports whether SSL is in use, its protocol and cipher, but not the certificate, and when
verification fails it says only that it failed.  So test-connection opens its own TLS session
first, speaking PostgreSQL's SSLRequest, and reads the certificate with ``cryptography``: who it
was issued to and by, the names it covers, when it expires, whether it signed itself.  Verification
follows the profile's sslMode as libpq does (verify-ca: the chain; verify-full: the chain and the
host name), so a failure here is the reason libpq would fail, in plain words.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import struct
from typing import Any

from cryptography import x509

from pgactions.connection.profiles import ConnectionProfile
from pgactions.spec.errors import ActionError

__all__ = ["certificate_facts", "probe_tls"]

_SSL_REQUEST = struct.pack("!ii", 8, 80877103)
_VERIFYING = ("verify-ca", "verify-full")
# OpenSSL verification codes → what to do about them.
_VERIFY_ADVICE = {
    10: "the server's certificate has expired: the server's administrator must renew it",
    18: "the server's certificate is self-signed: give that certificate itself as sslRootCert",
    19: "the server's certificate chain ends in a CA that sslRootCert does not hold",
    20: "the server's certificate was signed by a CA that sslRootCert does not hold: give the CA "
        "certificate that signed it",
    21: "the server's certificate was signed by a CA that sslRootCert does not hold: give the CA "
        "certificate that signed it",
    62: "the server's certificate is not issued for this host name: connect using a name the "
        "certificate lists, or use verify-ca",
}


def probe_tls(sock: socket.socket, profile: ConnectionProfile, reconnect: Any) -> dict[str, Any]:
    """Ask for TLS on a fresh TCP socket and report what the server presents.

    Returns ``{"offered": False}`` when the server declines SSL.  Raises SSL_FAILED (with the
    certificate's facts when one was seen) when the profile's sslMode would refuse the server.
    *reconnect* gives a new TCP socket, used to read a certificate that failed verification.
    """
    sock.sendall(_SSL_REQUEST)
    answer = sock.recv(1)
    if answer != b"S":
        if profile.sslMode in ("require", *_VERIFYING):
            raise ActionError("SSL_FAILED", "the server does not accept SSL connections, and sslMode "
                                            f"{profile.sslMode} requires one")
        return {"offered": False}
    context = _context(profile)
    try:
        tls = context.wrap_socket(sock, server_hostname=_server_name(profile))
    except ssl.SSLCertVerificationError as exc:
        facts = _unverified_facts(reconnect(), profile)
        advice = _VERIFY_ADVICE.get(exc.verify_code, exc.verify_message)
        names = ", ".join(facts.get("names", [])) if facts else ""
        detail = f"certificate verification failed ({exc.verify_message}): {advice}"
        if exc.verify_code == 62 and names:
            detail += f"; it is issued for {names}, not {profile.host}"
        raise ActionError("SSL_FAILED", detail, extra={"certificate": facts} if facts else None) from None
    except (ssl.SSLError, OSError) as exc:
        raise ActionError("SSL_FAILED", f"the TLS handshake failed: {_reason(exc)}") from None
    with tls:
        facts = _session_facts(tls)
    facts["verified"] = profile.sslMode in _VERIFYING
    return facts


def _context(profile: ConnectionProfile) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # libpq's default minimum
    files = profile.tls_files
    if profile.sslMode in _VERIFYING:
        root = files.get("sslrootcert")
        if root is None:
            raise ActionError("SSL_FAILED", f"sslMode {profile.sslMode} needs the CA certificate that "
                                            "signed the server's certificate: fill sslRootCert")
        try:
            if root == "system":
                context.load_default_certs()
            else:
                context.load_verify_locations(cafile=root)
        except (OSError, ssl.SSLError) as exc:
            raise ActionError("SSL_FAILED", f"sslRootCert could not be read as a certificate: {_reason(exc)}",
                              extra={"field": "sslRootCert"}) from None
        context.check_hostname = profile.sslMode == "verify-full"
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if "sslcert" in files and "sslkey" in files:
        try:
            context.load_cert_chain(files["sslcert"], files["sslkey"], password=profile.sslPassword)
        except (OSError, ssl.SSLError) as exc:
            raise ActionError("SSL_FAILED", "the client certificate or its private key could not be used "
                                            f"(wrong pass phrase, or a key of another certificate?): {_reason(exc)}",
                              extra={"field": "sslCert"}) from None
    return context


def _server_name(profile: ConnectionProfile) -> str:
    return profile.host.split(",")[0]


def _unverified_facts(sock: socket.socket, profile: ConnectionProfile) -> dict[str, Any] | None:
    """The certificate's facts without verifying it (to explain a failed verification)."""
    try:
        sock.sendall(_SSL_REQUEST)
        if sock.recv(1) != b"S":
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with context.wrap_socket(sock, server_hostname=_server_name(profile)) as tls:
            return certificate_facts(tls.getpeercert(binary_form=True))
    except (OSError, ssl.SSLError):
        return None
    finally:
        sock.close()


def _session_facts(tls: ssl.SSLSocket) -> dict[str, Any]:
    cipher = tls.cipher()
    return {"offered": True, "protocol": tls.version(), "cipher": cipher[0] if cipher else None,
            "certificate": certificate_facts(tls.getpeercert(binary_form=True))}


def certificate_facts(der: bytes | None, now: dt.datetime | None = None) -> dict[str, Any] | None:
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    now = now or dt.datetime.now(dt.timezone.utc)
    expires = cert.not_valid_after_utc
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names += [str(n) for n in san.get_values_for_type(x509.DNSName)]
        names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    common = [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    if not names:  # old certificates name their host in the subject's CN only
        names = [str(c) for c in common]
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "names": names,
        "notBefore": cert.not_valid_before_utc.isoformat().replace("+00:00", "Z"),
        "notAfter": expires.isoformat().replace("+00:00", "Z"),
        "daysLeft": (expires - now).days,
        "selfSigned": cert.issuer == cert.subject,
    }


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    return str(exc) or type(exc).__name__
