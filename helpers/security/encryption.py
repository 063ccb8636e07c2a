"""Encryption in transit (a local CA and a TLS server certificate) and at rest (AES-GCM).

Keys are wrapped in ``SecretKey``, whose ``repr`` and ``str`` never show the
bytes, so that printing or logging a key by mistake leaks nothing.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import torch
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from safetensors.torch import load as load_safetensors_bytes

# Magic prefix and version of the encrypted file format:
# MAGIC (8 bytes) | nonce (12 bytes) | ciphertext with 16-byte GCM tag.
MAGIC = b"MNBAEAD1"
NONCE_BYTES = 12
# A DNS name for a certificate: dot-separated labels of letters, digits and
# inner hyphens (RFC 1123), at most 253 characters, optionally after "*.".
_DNS_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME_PATTERN = re.compile(rf"(?:\*\.)?{_DNS_LABEL}(?:\.{_DNS_LABEL})*")


class DecryptionError(RuntimeError):
    """A file could not be decrypted: wrong key, tampered bytes or not our format."""


class SecretKey:
    """A 256-bit AES key whose printed form hides the key bytes."""

    def __init__(self, material: bytes):
        if len(material) != 32:
            raise ValueError(f"an AES-256 key has 32 bytes, got {len(material)}")
        self._material = bytes(material)

    def material(self) -> bytes:
        """Return the raw key bytes (keep them out of logs and notebooks)."""
        return self._material

    def __repr__(self) -> str:
        return "SecretKey(<256-bit, hidden>)"

    __str__ = __repr__


def generate_key() -> SecretKey:
    """Return a new random AES-256 key."""
    return SecretKey(secrets.token_bytes(32))


def save_key(key: SecretKey, path: str | Path) -> Path:
    """Write the key bytes to ``path`` readable only by its owner (mode 0600)."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.material())
    return path


def load_key(path: str | Path) -> SecretKey:
    """Read a key written by ``save_key``."""
    return SecretKey(Path(path).read_bytes())


def encrypt_bytes(plaintext: bytes, key: SecretKey, associated_data: bytes = b"") -> bytes:
    """Return ``MAGIC | nonce | AES-256-GCM(plaintext)``; ``associated_data`` is authenticated, not stored."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return MAGIC + nonce + AESGCM(key.material()).encrypt(nonce, plaintext, MAGIC + associated_data)


def decrypt_bytes(blob: bytes, key: SecretKey, associated_data: bytes = b"") -> bytes:
    """Return the plaintext of ``encrypt_bytes`` output; raise ``DecryptionError`` if it fails."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise TypeError(f"blob must be bytes, got {type(blob).__name__}; read the file with Path.read_bytes()")
    blob = bytes(blob)
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + NONCE_BYTES + 16:
        raise DecryptionError("not an encrypted artefact: the header is missing or the file is truncated")
    nonce = blob[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
    try:
        return AESGCM(key.material()).decrypt(nonce, blob[len(MAGIC) + NONCE_BYTES :], MAGIC + associated_data)
    except InvalidTag:
        raise DecryptionError(
            "decryption failed: the key is wrong, or the file or its associated data was changed"
        ) from None


def encrypt_file(source: str | Path, destination: str | Path, key: SecretKey) -> Path:
    """Encrypt ``source`` into ``destination``; the destination's name is bound as associated data.

    Binding the name means a ciphertext renamed to another artefact's name
    fails to decrypt, so files cannot be swapped unnoticed.
    """
    source, destination = Path(source), Path(destination)
    blob = encrypt_bytes(source.read_bytes(), key, destination.name.encode("utf-8"))
    tmp = destination.with_name(destination.name + ".part")
    tmp.write_bytes(blob)
    os.replace(tmp, destination)
    return destination


def decrypt_file(path: str | Path, key: SecretKey) -> bytes:
    """Return the decrypted bytes of a file written by ``encrypt_file`` (nothing is written to disk)."""
    path = Path(path)
    return decrypt_bytes(path.read_bytes(), key, path.name.encode("utf-8"))


def load_encrypted_weights(path: str | Path, key: SecretKey) -> dict[str, torch.Tensor]:
    """Decrypt a safetensors artefact in memory and return its tensors."""
    return load_safetensors_bytes(decrypt_file(path, key))


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a local CA and a server certificate it issued."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def _write_private_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def _check_days(days: int) -> None:
    # A certificate valid for zero days has already expired when it is used.
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError(f"days must be a positive integer (certificate lifetime), got {days!r}")


def _subject_alternative_names(hostnames: tuple[str, ...]) -> list[x509.GeneralName]:
    """Return one IP address or DNS name entry per hostname; raise ``ValueError`` on an invalid one."""
    if isinstance(hostnames, str) or not hostnames:
        raise ValueError(f"hostnames must be a non-empty tuple of names, got {hostnames!r}; for example ('localhost',)")
    names: list[x509.GeneralName] = []
    for host in hostnames:
        if not isinstance(host, str):
            raise TypeError(f"each hostname must be a string, got {type(host).__name__} {host!r}")
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if len(host) > 253 or not _DNS_NAME_PATTERN.fullmatch(host):
            raise ValueError(f"invalid hostname {host!r}; use an IP address or a DNS name such as 'localhost'")
        names.append(x509.DNSName(host))
    return names


def make_ca(directory: str | Path, name: str = "MNIST book local CA", days: int = 30) -> tuple[Path, Path]:
    """Create a self-signed CA (ECDSA P-256) in ``directory``; return (certificate, key) paths."""
    _check_days(days)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "ca.pem", directory / "ca-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    _write_private_key(key, key_path)
    return cert_path, key_path


def issue_server_certificate(
    ca_cert: str | Path,
    ca_key: str | Path,
    directory: str | Path,
    hostnames: tuple[str, ...] = ("localhost", "127.0.0.1"),
    days: int = 30,
) -> tuple[Path, Path]:
    """Issue a TLS server certificate for ``hostnames`` signed by the CA; return (certificate, key) paths."""
    _check_days(days)
    names = _subject_alternative_names(hostnames)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    authority = x509.load_pem_x509_certificate(Path(ca_cert).read_bytes())
    authority_key = serialization.load_pem_private_key(Path(ca_key).read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(authority.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.public_key()), critical=False
        )
        .sign(authority_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.pem", directory / "server-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    _write_private_key(key, key_path)
    return cert_path, key_path


def make_tls_files(directory: str | Path, hostnames: tuple[str, ...] = ("localhost", "127.0.0.1")) -> TlsFiles:
    """Create a CA and a server certificate for ``hostnames`` in ``directory``."""
    # Checked before the CA is written, so invalid names leave no files behind.
    _subject_alternative_names(hostnames)
    ca_cert, ca_key = make_ca(directory)
    server_cert, server_key = issue_server_certificate(ca_cert, ca_key, directory, hostnames)
    return TlsFiles(ca_cert=ca_cert, server_cert=server_cert, server_key=server_key)
