"""tls-server-end-point (RFC 5929 §4.1): which hash each kind of certificate gets."""

from __future__ import annotations

import hashlib
import shutil
import ssl
import subprocess
from functools import cache
from pathlib import Path

import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from anyio_smtp.auth._channel_binding import signature_hash, tls_server_end_point

# signatureAlgorithm OIDs (DER content octets).
ECDSA_SHA256 = bytes.fromhex("2a8648ce3d040302")
RSA_SHA256 = bytes.fromhex("2a864886f70d01010b")
SUBJECT = ("-subj", "/CN=x", "-days", "1")


@cache
def trustme_der(key_type: trustme.KeyType) -> bytes:
    """A leaf certificate from trustme (signed with SHA-256), as DER."""
    leaf = trustme.CA(key_type=key_type).issue_cert("mx.test")
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode("ascii"))


def openssl_der(tmp_path: Path, *options: str) -> bytes:
    """A self-signed certificate made by the ``openssl`` command line, as DER."""
    openssl = shutil.which("openssl")
    assert openssl is not None, (
        "these tests need the openssl command line tool (.ci/run installs it)"
    )
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            *options,
            "-nodes",
            "-keyout",
            "k.pem",
            "-out",
            "c.pem",
            *SUBJECT,
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=120,
    )
    subprocess.run(
        [openssl, "x509", "-in", "c.pem", "-outform", "DER", "-out", "c.der"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return (tmp_path / "c.der").read_bytes()


def with_signature_algorithm(der: bytes, old: bytes, new: bytes) -> bytes:
    """``der`` with its outer signatureAlgorithm OID replaced (same length)."""
    assert len(old) == len(new)
    index = der.rindex(old)  # the outer AlgorithmIdentifier comes after the tbsCertificate
    return der[:index] + new + der[index + len(old) :]


def test_ecdsa_sha256_certificate() -> None:
    der = trustme_der(trustme.KeyType.ECDSA)
    assert signature_hash(der) == "sha256"
    assert tls_server_end_point(der) == hashlib.sha256(der).digest()


def test_rsa_sha256_certificate() -> None:
    der = trustme_der(trustme.KeyType.RSA)
    assert signature_hash(der) == "sha256"
    assert tls_server_end_point(der) == hashlib.sha256(der).digest()


def test_ecdsa_sha384_certificate_uses_sha384(tmp_path: Path) -> None:
    der = openssl_der(tmp_path, "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-sha384")
    assert bytes.fromhex("2a8648ce3d040303") in der  # ecdsa-with-SHA384
    assert signature_hash(der) == "sha384"
    assert tls_server_end_point(der) == hashlib.sha384(der).digest()


def test_sha1_signed_certificate_uses_sha256(tmp_path: Path) -> None:
    # RFC 5929 §4.1: MD5 and SHA-1 are replaced by SHA-256.
    der = openssl_der(tmp_path, "-newkey", "rsa:2048", "-sha1")
    assert bytes.fromhex("2a864886f70d010105") in der  # sha1WithRSAEncryption
    assert signature_hash(der) == "sha256"
    assert tls_server_end_point(der) == hashlib.sha256(der).digest()


def test_ed25519_certificate_uses_sha256(tmp_path: Path) -> None:
    # No hash of its own: SHA-256, as deployed servers do.
    der = openssl_der(tmp_path, "-newkey", "ed25519")
    assert signature_hash(der) == "sha256"


@pytest.mark.parametrize(
    ("key_type", "old", "oid", "expected"),
    [
        (trustme.KeyType.ECDSA, ECDSA_SHA256, "2a8648ce3d040301", "sha224"),
        (trustme.KeyType.ECDSA, ECDSA_SHA256, "2a8648ce3d040303", "sha384"),
        (trustme.KeyType.ECDSA, ECDSA_SHA256, "2a8648ce3d040304", "sha512"),
        (trustme.KeyType.ECDSA, ECDSA_SHA256, "2a8648ce3d040399", "sha256"),  # unknown
        (trustme.KeyType.RSA, RSA_SHA256, "2a864886f70d010104", "sha256"),  # md5
        (trustme.KeyType.RSA, RSA_SHA256, "2a864886f70d010105", "sha256"),  # sha1
        (trustme.KeyType.RSA, RSA_SHA256, "2a864886f70d01010e", "sha224"),
        (trustme.KeyType.RSA, RSA_SHA256, "2a864886f70d01010c", "sha384"),
        (trustme.KeyType.RSA, RSA_SHA256, "2a864886f70d01010d", "sha512"),
        (trustme.KeyType.RSA, RSA_SHA256, "2a864886f70d01010a", "sha256"),  # RSASSA-PSS
    ],
)
def test_signature_algorithm_table(
    key_type: trustme.KeyType, old: bytes, oid: str, expected: str
) -> None:
    # The algorithm is read from the outer AlgorithmIdentifier only: a certificate
    # whose OID there is changed (so its signature no longer verifies) shows it.
    der = with_signature_algorithm(trustme_der(key_type), old, bytes.fromhex(oid))
    assert signature_hash(der) == expected
    assert tls_server_end_point(der) == hashlib.new(expected, der).digest()


def malformed() -> list[bytes]:
    der = trustme_der(trustme.KeyType.ECDSA)
    return [
        b"",
        b"\x30",
        b"\x30\x00",
        b"\x30\x85\x01\x02\x03\x04\x05",  # a length of 5 bytes
        b"\x30\x84\xff\xff\xff\xff",  # a length beyond the data
        b"\x31\x03\x02\x01\x00",  # a SET, not a SEQUENCE
        b"\x30\x03\x30\x01",  # truncated tbsCertificate
        b"\x30\x05\x30\x00\x02\x01\x00",  # no AlgorithmIdentifier
        b"\x30\x06\x30\x00\x30\x02\x02\x00",  # AlgorithmIdentifier without an OID
        der[: len(der) // 2],
        der[:-80],
        b"-----BEGIN CERTIFICATE-----",
    ]


@pytest.mark.parametrize("data", malformed())
def test_malformed_input_falls_back_to_sha256(data: bytes) -> None:
    assert signature_hash(data) == "sha256"
    assert tls_server_end_point(data) == hashlib.sha256(data).digest()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_give_a_binding(data: bytes) -> None:
    name = signature_hash(data)
    assert name in {"sha224", "sha256", "sha384", "sha512"}
    assert tls_server_end_point(data) == hashlib.new(name, data).digest()
