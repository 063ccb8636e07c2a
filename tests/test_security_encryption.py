"""AES-GCM at rest and the local CA's certificates."""

import ssl

import pytest
import torch
from cryptography import x509

from helpers import models
from helpers.security import encryption, integrity


def test_encrypted_weights_round_trip(tmp_path):
    model = models.MLP(hidden=(16,))
    plain = integrity.save_weights(model, tmp_path / "mlp.safetensors")
    key = encryption.generate_key()
    sealed = encryption.encrypt_file(plain, tmp_path / "mlp.safetensors.enc", key)
    tensors = encryption.load_encrypted_weights(sealed, key)
    assert torch.equal(tensors["output.weight"], model.output.weight)


def test_ciphertext_hides_plaintext(tmp_path):
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"output.weight" * 100)
    sealed = encryption.encrypt_file(plain, tmp_path / "sealed.bin", encryption.generate_key())
    assert b"output.weight" not in sealed.read_bytes()


def test_wrong_key_fails(tmp_path):
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"weights")
    sealed = encryption.encrypt_file(plain, tmp_path / "sealed.bin", encryption.generate_key())
    with pytest.raises(encryption.DecryptionError, match="key is wrong"):
        encryption.decrypt_file(sealed, encryption.generate_key())


def test_tampered_ciphertext_fails(tmp_path):
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"weights")
    key = encryption.generate_key()
    sealed = encryption.encrypt_file(plain, tmp_path / "sealed.bin", key)
    blob = bytearray(sealed.read_bytes())
    blob[-20] ^= 0x01
    sealed.write_bytes(bytes(blob))
    with pytest.raises(encryption.DecryptionError):
        encryption.decrypt_file(sealed, key)


def test_renamed_ciphertext_fails(tmp_path):
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"weights")
    key = encryption.generate_key()
    sealed = encryption.encrypt_file(plain, tmp_path / "a.enc", key)
    moved = sealed.rename(tmp_path / "b.enc")
    with pytest.raises(encryption.DecryptionError):
        encryption.decrypt_file(moved, key)


def test_key_repr_hides_material(tmp_path):
    key = encryption.generate_key()
    assert key.material().hex() not in repr(key)
    assert key.material().hex() not in str(key)
    path = encryption.save_key(key, tmp_path / "key.bin")
    assert path.stat().st_mode & 0o777 == 0o600
    assert encryption.load_key(path).material() == key.material()


def test_key_rejects_wrong_length():
    with pytest.raises(ValueError, match="32 bytes"):
        encryption.SecretKey(b"short")


def test_server_certificate_chains_to_ca(tmp_path):
    tls = encryption.make_tls_files(tmp_path)
    certificate = x509.load_pem_x509_certificate(tls.server_cert.read_bytes())
    authority = x509.load_pem_x509_certificate(tls.ca_cert.read_bytes())
    certificate.verify_directly_issued_by(authority)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)


def test_ca_loads_into_ssl_context(tmp_path):
    tls = encryption.make_tls_files(tmp_path)
    context = ssl.create_default_context(cafile=str(tls.ca_cert))
    assert context.cert_store_stats()["x509_ca"] == 1


@pytest.mark.parametrize("days", [0, -5])
def test_make_ca_rejects_bad_days(tmp_path, days):
    with pytest.raises(ValueError, match="days"):
        encryption.make_ca(tmp_path, days=days)


@pytest.mark.parametrize("hostnames", [(), "localhost", ("bad\x00host",), ("-bad",)])
def test_tls_files_reject_bad_hostnames(tmp_path, hostnames):
    with pytest.raises(ValueError, match="hostname"):
        encryption.make_tls_files(tmp_path, hostnames=hostnames)
    assert not (tmp_path / "ca.pem").exists()


def test_decrypt_rejects_str():
    with pytest.raises(TypeError, match="bytes"):
        encryption.decrypt_bytes("text", encryption.generate_key())
