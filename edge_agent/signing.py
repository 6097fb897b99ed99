"""Canonical JSON and Ed25519 signatures (manifests, index, desired state).

Keys are files: `<key-id>.key` (PKCS#8 PEM, private) and `<key-id>.pub` (PEM, public). The key id is
derived from the public key, so a renamed file cannot pretend to be another key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_agent.errors import KeyFileError, SignatureError


def canonical_json(obj: Any) -> bytes:
    """One byte form per document: sorted keys, no spaces, UTF-8. What signatures cover."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def key_id_of(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519-" + hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        key = Ed25519PrivateKey.generate()
        return cls(key_id_of(key.public_key()), key)

    @property
    def public(self) -> VerifyKey:
        return VerifyKey(self.key_id, self.private_key.public_key())

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self.private_key.sign(data)).decode()

    def save(self, directory: Path) -> tuple[Path, Path]:
        """Write `<id>.key` (mode 0600) and `<id>.pub`; refuses to overwrite."""
        directory.mkdir(parents=True, exist_ok=True)
        priv, pub = directory / f"{self.key_id}.key", directory / f"{self.key_id}.pub"
        if priv.exists():
            raise KeyFileError(f"{priv}: a key with this id already exists")
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        self.public.save(pub)
        return priv, pub

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise KeyFileError(f"{path}: not a readable Ed25519 private key ({exc})") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{path}: not an Ed25519 private key")
        return cls(key_id_of(key.public_key()), key)


@dataclass(frozen=True)
class VerifyKey:
    key_id: str
    public_key: Ed25519PublicKey

    def verify(self, data: bytes, signature_b64: str) -> None:
        try:
            sig = base64.b64decode(signature_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SignatureError("signature is not valid base64") from exc
        try:
            self.public_key.verify(sig, data)
        except InvalidSignature as exc:
            raise SignatureError(f"signature does not match the content (key {self.key_id})") from exc

    def save(self, path: Path) -> None:
        path.write_bytes(
            self.public_key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    @classmethod
    def load(cls, path: Path) -> VerifyKey:
        try:
            key = serialization.load_pem_public_key(Path(path).read_bytes())
        except (OSError, ValueError, TypeError) as exc:
            raise KeyFileError(f"{path}: not a readable Ed25519 public key ({exc})") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"{path}: not an Ed25519 public key")
        return cls(key_id_of(key), key)


class TrustedKeys:
    """The public keys a reader accepts, by key id."""

    def __init__(self, keys: list[VerifyKey] | None = None) -> None:
        self._keys = {k.key_id: k for k in keys or []}

    @classmethod
    def from_paths(cls, paths: list[Path]) -> TrustedKeys:
        """Files are `.pub` keys; a directory contributes every `*.pub` in it."""
        keys: list[VerifyKey] = []
        for p in map(Path, paths):
            files = sorted(p.glob("*.pub")) if p.is_dir() else [p]
            keys += [VerifyKey.load(f) for f in files]
        return cls(keys)

    def __len__(self) -> int:
        return len(self._keys)

    def ids(self) -> list[str]:
        return sorted(self._keys)

    def get(self, key_id: str | None) -> VerifyKey:
        if not self._keys:
            raise SignatureError("no trusted keys are configured")
        if key_id not in self._keys:
            raise SignatureError(
                f"signed by key {key_id!r}, which is not trusted (trusted: {', '.join(self.ids())})"
            )
        return self._keys[key_id]

    def verify(self, data: bytes, key_id: str | None, signature_b64: str | None) -> VerifyKey:
        if not signature_b64:
            raise SignatureError("the document is not signed")
        key = self.get(key_id)
        key.verify(data, signature_b64)
        return key


# Detached signatures (manifest.sig, index.sig) are small JSON documents naming their key.


def detached_signature(key: SigningKey, data: bytes) -> bytes:
    doc = {"algorithm": "ed25519", "key_id": key.key_id, "signature": key.sign(data)}
    return json.dumps(doc, indent=2).encode() + b"\n"


def verify_detached(
    data: bytes, sig_bytes: bytes, trusted: TrustedKeys, sig_name: str = "signature"
) -> VerifyKey:
    try:
        doc = json.loads(sig_bytes)
        if doc.get("algorithm") != "ed25519":
            raise SignatureError(f"{sig_name}: unsupported algorithm {doc.get('algorithm')!r}")
        key_id, signature = doc["key_id"], doc["signature"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SignatureError(f"{sig_name}: malformed signature file ({exc})") from exc
    try:
        return trusted.verify(data, key_id, signature)
    except SignatureError as exc:
        raise SignatureError(f"{sig_name}: {exc}") from exc


def sign_document(doc: dict[str, Any], key: SigningKey) -> dict[str, Any]:
    """Embed `key_id` and `signature` in a JSON document (desired state): signature over the rest."""
    body = {k: v for k, v in doc.items() if k != "signature"}
    body["key_id"] = key.key_id
    return {**body, "signature": key.sign(canonical_json(body))}


def verify_document(doc: dict[str, Any], trusted: TrustedKeys) -> VerifyKey:
    body = {k: v for k, v in doc.items() if k != "signature"}
    return trusted.verify(canonical_json(body), doc.get("key_id"), doc.get("signature"))


__all__ = [
    "SigningKey",
    "TrustedKeys",
    "VerifyKey",
    "canonical_json",
    "detached_signature",
    "key_id_of",
    "sign_document",
    "verify_detached",
    "verify_document",
]
