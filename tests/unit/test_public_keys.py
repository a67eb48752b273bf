"""SSH public keys as api/keypairs.py takes them: each accepted type, generated here with `cryptography`,
fingerprinted as OpenSSH does; everything else refused with what is accepted."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from api.keypairs import MAX_PUBLIC_KEY_CHARS, parse_public_key
from common.errors import InvalidPublicKey
from tests.support.ssh_keys import ACCEPTED, ed25519_key, expected_fingerprint, public_line, rsa_key


@pytest.mark.parametrize("kind", sorted(ACCEPTED))
def test_each_accepted_type_is_taken_with_its_comment_and_fingerprint(kind: str) -> None:
    line = public_line(ACCEPTED[kind]())
    key = parse_public_key(f"  {line} alice@laptop (work)\n")
    assert key.type == kind
    assert key.line == f"{line} alice@laptop (work)"
    assert key.fingerprint == expected_fingerprint(line)
    assert parse_public_key(line).line == line  # no comment: none added


@pytest.mark.parametrize("kind", ["ssh-ed25519", "ecdsa-sha2-nistp384", "ssh-rsa"])
def test_the_fingerprint_is_the_one_ssh_keygen_prints(kind: str, tmp_path: Path) -> None:
    line = public_line(ACCEPTED[kind]()) + " bob@host"
    path = tmp_path / "key.pub"
    path.write_text(line + "\n")
    printed = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(path)], capture_output=True, text=True, check=True,
        timeout=30,
    ).stdout.split()  # fmt: skip
    assert printed[1] == parse_public_key(line).fingerprint


def private_pem(private: object, encoding: serialization.PrivateFormat) -> str:
    return private.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, encoding, serialization.NoEncryption()
    ).decode()


@pytest.mark.parametrize(
    "text,why",
    [
        (lambda: public_line(rsa_key(1024)), "1024 bits"),
        # (a DSA line made by hand: cryptography warns when it writes one)
        (lambda: "ssh-dss " + base64.b64encode(b"\0\0\0\x07ssh-dss" + b"\0" * 64).decode(), "accepted type"),
        (lambda: private_pem(ed25519_key(), serialization.PrivateFormat.OpenSSH), "private key"),
        (lambda: private_pem(rsa_key(2048), serialization.PrivateFormat.PKCS8), "private key"),
        (lambda: "ssh-ed25519 AAAAnotbase64!!", "does not decode"),
        (lambda: "ssh-ed25519 " + base64.b64encode(b"garbage").decode(), "does not decode"),
        (lambda: "ssh-rsa " + public_line(ed25519_key()).split()[1], "does not decode"),
        (lambda: "hello world", "accepted type"),
        (lambda: "", "accepted type"),
        (lambda: public_line(ed25519_key()) + " bad\x07comment", "control characters"),
        (lambda: public_line(ed25519_key()) + "\n" + public_line(ed25519_key()), "more than one line"),
        (lambda: public_line(ed25519_key()) + " " + "x" * MAX_PUBLIC_KEY_CHARS, "characters long"),
        (lambda: "ssh-ed25519 AAAA\udc80", "does not decode"),
    ],
    ids=[
        "rsa-1024", "dsa", "openssh-private", "pem-private", "not-base64", "garbage-blob", "type-mismatch",
        "words", "empty", "control-char", "two-lines", "too-long", "lone-surrogate",
    ],
)  # fmt: skip
def test_anything_else_is_refused_saying_what_is_accepted(text: object, why: str) -> None:
    with pytest.raises(InvalidPublicKey) as refused:
        parse_public_key(text())  # type: ignore[operator]
    assert why in refused.value.message
    assert "ssh-ed25519" in refused.value.message and "2048" in refused.value.message
    assert refused.value.status == 400 and refused.value.code == "invalid_public_key"
