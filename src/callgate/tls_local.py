"""`callgate serve --self-signed`: a local certificate authority and a server certificate it signs,
kept in DATA_DIR/tls, for trials on an office network without a certificate from a public CA.

Browsers give the microphone only to secure origins (https, or localhost), so the softphone needs
HTTPS as soon as a colleague uses it from another machine. The CA is made once (an EC P-256 key,
valid 10 years) and stays, so the trust an operator gives it survives restarts; the server
certificate (397 days, serverAuth, the names and addresses given) is issued again when a name is
missing from it or it expires within 30 days. Private keys are written 0600 in a 0700 directory.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from callgate.keys import write_private_file

CA_DAYS = 3650
SERVER_DAYS = 397  # browsers refuse longer-lived server certificates from public CAs
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True, slots=True)
class LocalTls:
    """The files of a local CA and the server certificate it signed."""

    ca_cert: Path
    cert: Path
    key: Path
    created_ca: bool
    issued: bool  # a new server certificate was written on this call


def ensure_local_tls(data_dir: Path, names: list[str]) -> LocalTls:
    """The local CA (created if missing) and a server certificate for `names` (DNS names or IP
    addresses), issued again when one is missing from it or it expires soon."""
    folder = data_dir / "tls"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_cert_path, ca_key_path = folder / "ca.pem", folder / "ca-key.pem"
    cert_path, key_path = folder / "server.pem", folder / "server-key.pem"
    created_ca = not (ca_cert_path.exists() and ca_key_path.exists())
    if created_ca:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _ca_certificate(ca_key)
        _write_key(ca_key_path, ca_key)
        ca_cert_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    else:
        loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{ca_key_path}: not an EC private key")
        ca_key = loaded
        ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    wanted = _general_names(names)
    issued = created_ca or not _still_good(cert_path, key_path, wanted)
    if issued:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _server_certificate(key, ca_key, ca_cert, wanted)
        _write_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return LocalTls(ca_cert_path, cert_path, key_path, created_ca, issued)


def trust_instructions(ca_cert: Path) -> str:
    """How to make browsers and tools on another machine trust the local CA."""
    return (
        f"to trust it on a client machine, copy {ca_cert} there and: "
        "Debian/Ubuntu `sudo cp ca.pem /usr/local/share/ca-certificates/callgate-ca.crt && "
        "sudo update-ca-certificates`; Chrome/Chromium on Linux `certutil -d sql:$HOME/.pki/nssdb "
        '-A -t "C,," -n callgate -i ca.pem`; macOS `sudo security add-trusted-cert -d -r '
        "trustRoot -k /Library/Keychains/System.keychain ca.pem`; Windows `certutil -addstore "
        "Root ca.pem`; Firefox: Settings > Certificates > Import; callgate's own CLI: "
        "SSL_CERT_FILE=ca.pem"
    )


def _general_names(names: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in dict.fromkeys(n.strip("[]") for n in names if n):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _still_good(cert_path: Path, key_path: Path, wanted: list[x509.GeneralName]) -> bool:
    if not (cert_path.exists() and key_path.exists()):
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if cert.not_valid_after_utc - RENEW_BEFORE < dt.datetime.now(dt.UTC):
        return False
    try:
        present = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return False
    return set(wanted) <= present


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.unlink(missing_ok=True)
    write_private_file(path, pem)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """Signatures only (EC keys); a CA also signs certificates and CRLs (RFC 5280 §4.2.1.3)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "callgate"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"callgate local CA ({os.uname().nodename})"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(ca=True),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _server_certificate(
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    names: list[x509.GeneralName],
) -> x509.Certificate:
    first = next((n.value for n in names if isinstance(n, x509.DNSName)), None)
    common = str(first or (names[0].value if names else "callgate"))
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(ca=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
