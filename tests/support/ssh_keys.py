"""SSH keys for the tests, made with `cryptography`, and OpenSSH's fingerprint computed independently
of api/keypairs.py."""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

OPENSSH = (serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


def ed25519_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def ecdsa_key(curve: ec.EllipticCurve) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve)


def rsa_key(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


ACCEPTED = {
    "ssh-ed25519": ed25519_key,
    "ecdsa-sha2-nistp256": lambda: ecdsa_key(ec.SECP256R1()),
    "ecdsa-sha2-nistp384": lambda: ecdsa_key(ec.SECP384R1()),
    "ecdsa-sha2-nistp521": lambda: ecdsa_key(ec.SECP521R1()),
    "ssh-rsa": lambda: rsa_key(2048),
}


def public_line(private: object) -> str:
    return private.public_key().public_bytes(*OPENSSH).decode()  # type: ignore[attr-defined]


def expected_fingerprint(line: str) -> str:
    """Computed here from the base64 blob, independently of the code under test."""
    blob = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
