"""The ``tls-server-end-point`` channel binding (RFC 5929 §4), from a DER certificate.

RFC 5929 §4.1: the binding is the hash of the server's certificate, where "if
the certificate's signatureAlgorithm uses a single hash function and that hash
function is either MD5 or SHA-1, then use SHA-256; if the certificate's
signatureAlgorithm uses a single hash function and that hash function neither
MD5 nor SHA-1, then use the hash function associated with the certificate's
signatureAlgorithm".  The stdlib does not expose the signature algorithm, so
this module reads it from the DER encoding: ``Certificate ::= SEQUENCE {
tbsCertificate, signatureAlgorithm AlgorithmIdentifier, signatureValue }``.
"""

from __future__ import annotations

import hashlib

__all__ = ("tls_server_end_point",)

# signatureAlgorithm OIDs (DER-encoded content octets) -> hash to use.
_SHA256 = "sha256"
_HASH_BY_OID: dict[bytes, str] = {
    # RSA PKCS#1 v1.5 (RFC 8017): md5, sha1 -> sha256 per RFC 5929
    bytes.fromhex("2a864886f70d010104"): _SHA256,  # md5WithRSAEncryption
    bytes.fromhex("2a864886f70d010105"): _SHA256,  # sha1WithRSAEncryption
    bytes.fromhex("2a864886f70d01010e"): "sha224",  # sha224WithRSAEncryption
    bytes.fromhex("2a864886f70d01010b"): _SHA256,  # sha256WithRSAEncryption
    bytes.fromhex("2a864886f70d01010c"): "sha384",  # sha384WithRSAEncryption
    bytes.fromhex("2a864886f70d01010d"): "sha512",  # sha512WithRSAEncryption
    # ECDSA (RFC 5758)
    bytes.fromhex("2a8648ce3d0401"): _SHA256,  # ecdsa-with-SHA1
    bytes.fromhex("2a8648ce3d040301"): "sha224",
    bytes.fromhex("2a8648ce3d040302"): _SHA256,
    bytes.fromhex("2a8648ce3d040303"): "sha384",
    bytes.fromhex("2a8648ce3d040304"): "sha512",
    # DSA
    bytes.fromhex("2a8648ce380403"): _SHA256,  # dsa-with-sha1
    bytes.fromhex("608648016503040302"): _SHA256,  # dsa-with-sha256
}


def _read(data: bytes, offset: int) -> tuple[int, int, int]:
    """Read one DER header at ``offset``: (tag, content start, content end)."""
    tag = data[offset]
    length = data[offset + 1]
    start = offset + 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    end = start + length
    if end > len(data):
        raise ValueError("truncated DER")
    return tag, start, end


def signature_hash(certificate: bytes) -> str:
    """The hash RFC 5929 §4.1 picks for this DER certificate.

    Algorithms with no single hash of their own (RSASSA-PSS, Ed25519, Ed448,
    or anything unknown) use SHA-256, as RFC 5929 leaves them undefined and
    deployed servers (Dovecot, Cyrus SASL) use SHA-256 there.
    """
    try:
        tag, start, _end = _read(certificate, 0)  # Certificate SEQUENCE
        if tag != 0x30:
            raise ValueError("not a certificate")
        _tag, _tbs_start, tbs_end = _read(certificate, start)  # tbsCertificate
        tag, algorithm_start, _ = _read(certificate, tbs_end)  # AlgorithmIdentifier
        oid_tag, oid_start, oid_end = _read(certificate, algorithm_start)
        if tag != 0x30 or oid_tag != 0x06:
            raise ValueError("no signature algorithm")
    except (IndexError, ValueError):
        return _SHA256
    return _HASH_BY_OID.get(certificate[oid_start:oid_end], _SHA256)


def tls_server_end_point(certificate: bytes) -> bytes:
    """The ``tls-server-end-point`` channel binding data for a DER server certificate."""
    return hashlib.new(signature_hash(certificate), certificate).digest()
