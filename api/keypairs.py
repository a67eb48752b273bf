"""SSH public keys as a project adds them: parsed and checked by `cryptography`, kept in OpenSSH's
one-line form, and fingerprinted as `ssh-keygen -l` prints it.

Only the key types worth trusting today are taken (no DSA, no RSA under 2048 bits); anything else,
including a private key pasted by mistake, is refused with what is accepted. A refusal never
repeats the text it was given: it may be a secret."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from common.errors import InvalidPublicKey

MAX_PUBLIC_KEY_CHARS = 16 * 1024
MIN_RSA_BITS = 2048
ECDSA_TYPES = ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")
KEY_TYPES = ("ssh-ed25519", *ECDSA_TYPES, "ssh-rsa")
ACCEPTED = (
    "Send one OpenSSH public key line, '<type> <base64> [comment]' (the .pub file ssh-keygen writes), "
    f"of type ssh-ed25519, {', '.join(ECDSA_TYPES)}, or ssh-rsa of at least {MIN_RSA_BITS} bits; "
    f"at most {MAX_PUBLIC_KEY_CHARS} characters."
)


@dataclass(frozen=True)
class PublicKey:
    type: str
    line: str  # '<type> <base64>[ <comment>]', re-encoded from the parsed key
    fingerprint: str


def parse_public_key(text: str) -> PublicKey:
    """The key in `text`, checked; InvalidPublicKey (400) with what is accepted otherwise."""
    if len(text) > MAX_PUBLIC_KEY_CHARS:
        raise _refused(f"The key is {len(text)} characters long.")
    if "-----BEGIN" in text and "PRIVATE KEY" in text:
        raise _refused("That is a private key: never send it anywhere; send its public half (the .pub file).")
    text = text.strip()
    if "\n" in text or "\r" in text:
        raise _refused("The key spans more than one line.")
    parts = text.split(None, 2)
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise _refused("That is not an OpenSSH public key of an accepted type.")
    kind, comment = parts[0], parts[2] if len(parts) == 3 else ""
    if not comment.isprintable():
        raise _refused("The key's comment has control characters.")
    try:
        key = serialization.load_ssh_public_key(f"{kind} {parts[1]}".encode("ascii", "strict"))
    except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError):
        raise _refused("The key's data does not decode as that type of key.") from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise _refused(f"That RSA key has {key.key_size} bits.")
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise _refused("That is not a key of an accepted type.")
    encoded = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    encoded_type, blob = encoded.split(" ", 1)
    if encoded_type != kind:  # load_ssh_public_key checks this; so a mix-up never passes silently
        raise _refused("The key's type and its data disagree.")
    return PublicKey(kind, f"{encoded} {comment}".rstrip(), fingerprint(blob))


def fingerprint(blob_base64: str) -> str:
    """OpenSSH's fingerprint: 'SHA256:' and the unpadded base64 of the SHA-256 of the key blob."""
    digest = hashlib.sha256(base64.b64decode(blob_base64)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _refused(why: str) -> InvalidPublicKey:
    return InvalidPublicKey(f"{why} {ACCEPTED}", accepted_types=list(KEY_TYPES), min_rsa_bits=MIN_RSA_BITS)
