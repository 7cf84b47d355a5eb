"""Signed attestations: an in-toto Statement v1 over the outputs, in a DSSE envelope, Ed25519.

Usage::

    generate_keypair(Path("keys"), "hygiene")           # keys/hygiene.key (0600) + keys/hygiene.key.pub
    statement = make_statement(manifest)                  # subjects: shards + ledger parts, Merkle root
    envelope = sign_envelope(statement, load_private_key(path))
    payload = verify_envelope(envelope, [load_public_key(pub)])   # raises SignatureError
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pipeline.errors import PipelineError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://hygiene-pipeline.example.com/attestations/run-manifest/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
KEY_ENV = "HYGIENE_SIGNING_KEY"


class SignatureError(PipelineError):
    """A signature is missing, malformed, or does not verify with the given key."""


class SigningKeyError(PipelineError):
    """A key file is missing or is not an Ed25519 key."""


def generate_keypair(directory: Path, name: str = "hygiene") -> tuple[Path, Path]:
    """Write `name.key` (PEM PKCS#8, mode 0600) and `name.key.pub` (PEM SubjectPublicKeyInfo)."""
    directory.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    key_path = directory / f"{name}.key"
    pub_path = directory / f"{name}.key.pub"
    if key_path.exists() or pub_path.exists():
        raise SigningKeyError(f"{key_path}: a key already exists here; choose another --out or --name")
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub_path.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_path, pub_path


def load_private_key(path: str | os.PathLike) -> Ed25519PrivateKey:
    """Load an Ed25519 private key (PEM, unencrypted)."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise SigningKeyError(f"{path}: not a readable PEM private key ({e.__class__.__name__}); "
                              "create one with `hygiene keys generate --out DIR`") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: not an Ed25519 key; create one with `hygiene keys generate --out DIR`")
    return key


def load_public_key(path: str | os.PathLike) -> Ed25519PublicKey:
    """Load an Ed25519 public key (PEM)."""
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as e:
        raise SigningKeyError(f"{path}: not a readable PEM public key ({e.__class__.__name__})") from e
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path}: not an Ed25519 public key")
    return key


def key_id(public: Ed25519PublicKey) -> str:
    """sha256 of the raw public key bytes, hex: names the key in envelopes and sign-offs."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def merkle_root(subjects: list[dict]) -> str:
    """Binary Merkle tree (RFC 6962 style) over the subjects in order.

    Leaf = sha256(0x00 || name || 0x00 || sha256 hex), node = sha256(0x01 || left || right); an odd
    node is carried up unchanged. The root of no subjects is sha256 of the empty string.
    """
    level = [hashlib.sha256(b"\x00" + s["name"].encode() + b"\x00" + s["digest"]["sha256"].encode()).digest()
             for s in subjects]
    if not level:
        return hashlib.sha256(b"").hexdigest()
    while len(level) > 1:
        nxt = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].hex()


def subjects_of(manifest: dict) -> list[dict]:
    """in-toto subjects: every output shard, ledger part and metadata file with its sha256."""
    return [{"name": f["path"], "digest": {"sha256": f["sha256"]}}
            for f in manifest["outputs"]["shards"] + manifest["outputs"]["ledger"] + manifest["outputs"].get("metadata", [])]


def make_statement(manifest: dict) -> dict:
    """The in-toto Statement v1 whose predicate is the manifest (without its signature section)."""
    subjects = subjects_of(manifest)
    predicate = {k: v for k, v in manifest.items() if k != "signature"}
    return {"_type": STATEMENT_TYPE, "subject": subjects, "predicateType": PREDICATE_TYPE,
            "predicate": {**predicate, "merkle_root": merkle_root(subjects)}}


def canonical(obj: dict) -> bytes:
    """Canonical JSON bytes: sorted keys, compact separators, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def _signature(payload: bytes, private: Ed25519PrivateKey) -> dict:
    sig = private.sign(pae(PAYLOAD_TYPE, payload))
    return {"keyid": key_id(private.public_key()), "sig": base64.b64encode(sig).decode()}


def sign_envelope(statement: dict, private: Ed25519PrivateKey) -> dict:
    """A DSSE envelope over the statement's canonical JSON, signed by `private`."""
    payload = canonical(statement)
    return {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(payload).decode(),
            "signatures": [_signature(payload, private)]}


def cosign_envelope(envelope: dict, private: Ed25519PrivateKey) -> dict:
    """The envelope with one more signature over the same payload (e.g. an approver's)."""
    payload = base64.b64decode(envelope["payload"])
    return {**envelope, "signatures": [*envelope["signatures"], _signature(payload, private)]}


def verify_envelope(envelope: dict, keys: list[Ed25519PublicKey]) -> dict:
    """Check that each given key has a valid signature on the envelope; return the decoded statement."""
    try:
        payload_type = envelope["payloadType"]
        payload = base64.b64decode(envelope["payload"], validate=True)
        sigs = {s["keyid"]: base64.b64decode(s["sig"], validate=True) for s in envelope["signatures"]}
    except (KeyError, TypeError, ValueError) as e:
        raise SignatureError(f"the envelope is malformed ({e.__class__.__name__})") from e
    if payload_type != PAYLOAD_TYPE:
        raise SignatureError(f"unexpected payload type {payload_type!r}")
    for key in keys:
        kid = key_id(key)
        if kid not in sigs:
            raise SignatureError(f"no signature by key {kid[:16]}… in the envelope")
        try:
            key.verify(sigs[kid], pae(payload_type, payload))
        except InvalidSignature as e:
            raise SignatureError(f"the signature by key {kid[:16]}… does not verify: the statement was altered "
                                 "or signed with another key") from e
    try:
        return json.loads(payload)
    except json.JSONDecodeError as e:
        raise SignatureError("the envelope's payload is not JSON") from e


def signing_key_path(configured: str | None) -> str | None:
    """The signing key to use: the config's, else $HYGIENE_SIGNING_KEY, else none."""
    return configured or os.environ.get(KEY_ENV) or None
