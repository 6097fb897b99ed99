"""Ed25519 keys, canonical JSON and embedded/detached signatures."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.errors import KeyFileError, SignatureError
from edge_agent.signing import (
    SigningKey,
    TrustedKeys,
    canonical_json,
    detached_signature,
    sign_document,
    verify_detached,
    verify_document,
)


def test_canonical_json_is_order_independent() -> None:
    assert canonical_json({"b": 1, "a": [1, "é"]}) == canonical_json({"a": [1, "é"], "b": 1})
    assert canonical_json({"a": 1}) == b'{"a":1}'


def test_key_files_round_trip(tmp_path: Path) -> None:
    key = SigningKey.generate()
    priv, _pub = key.save(tmp_path)
    assert priv.stat().st_mode & 0o777 == 0o600
    assert SigningKey.load(priv).key_id == key.key_id
    trusted = TrustedKeys.from_paths([tmp_path])
    assert trusted.ids() == [key.key_id]
    with pytest.raises(KeyFileError, match="already exists"):
        key.save(tmp_path)
    (tmp_path / "junk.pub").write_text("not a key")
    with pytest.raises(KeyFileError, match=r"junk\.pub"):
        TrustedKeys.from_paths([tmp_path / "junk.pub"])


def test_detached_signature(signing_key: SigningKey, other_key: SigningKey) -> None:
    data = b'{"hello": "world"}'
    sig = detached_signature(signing_key, data)
    trusted = TrustedKeys([signing_key.public])
    assert verify_detached(data, sig, trusted).key_id == signing_key.key_id
    with pytest.raises(SignatureError, match="does not match"):
        verify_detached(data + b" ", sig, trusted)
    with pytest.raises(SignatureError, match="not trusted"):
        verify_detached(data, sig, TrustedKeys([other_key.public]))
    with pytest.raises(SignatureError, match="malformed"):
        verify_detached(data, b"{", trusted)


def test_embedded_signature(signing_key: SigningKey) -> None:
    doc = sign_document({"revision": 2, "deployment_id": "d"}, signing_key)
    trusted = TrustedKeys([signing_key.public])
    verify_document(doc, trusted)
    with pytest.raises(SignatureError, match="does not match"):
        verify_document({**doc, "revision": 3}, trusted)
    with pytest.raises(SignatureError, match="not signed"):
        verify_document({k: v for k, v in doc.items() if k != "signature"}, trusted)
