"""`slmops manifest verify`: signature, sizes, sha256 and paths, each failure with its own message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from build_side.cli.main import app
from build_side.manifest_io import file_entries, write_signed_manifest
from edge_agent.contracts import BundleManifest, SourceInfo, Variant
from edge_agent.signing import SigningKey

runner = CliRunner()


def make_bundle(root: Path, key: SigningKey) -> Path:
    bundle = root / "tiny-chat" / "1.0.0"
    (bundle / "cpu-int4").mkdir(parents=True)
    (bundle / "cpu-int4" / "model.onnx").write_bytes(b"\x08\x01" * 1000)
    (bundle / "cpu-int4" / "genai_config.json").write_text('{"model": {}}')
    manifest = BundleManifest(
        name="tiny-chat",
        version="1.0.0",
        source=SourceInfo(kind="hf-folder", ref="tiny"),
        variants=[
            Variant(
                id="cpu-int4",
                precision="int4",
                execution_providers=["CPUExecutionProvider"],
                min_memory_mb=64,
                files=file_entries(bundle, "cpu-int4"),
            )
        ],
    )
    write_signed_manifest(bundle, manifest, key)
    return bundle


def verify(bundle: Path, keys: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["manifest", "verify", str(bundle), "--trusted-key", str(keys)])
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")


def test_a_good_bundle_verifies(tmp_path: Path, signing_key: SigningKey, keys_dir: Path) -> None:
    bundle = make_bundle(tmp_path, signing_key)
    code, out = verify(bundle, keys_dir)
    assert code == 0, out
    assert "OK tiny-chat@1.0.0" in out and "2 files" in out


def test_other_trusted_key_fails(tmp_path: Path, signing_key: SigningKey, other_key: SigningKey) -> None:
    bundle = make_bundle(tmp_path, signing_key)
    other_dir = tmp_path / "other-keys"
    other_key.save(other_dir)
    code, out = verify(bundle, other_dir)
    assert code == 1
    assert "manifest.sig" in out and "not trusted" in out


@pytest.mark.parametrize("name", ["cpu-int4/model.onnx", "cpu-int4/genai_config.json"])
def test_one_changed_byte_fails(tmp_path: Path, signing_key: SigningKey, keys_dir: Path, name: str) -> None:
    bundle = make_bundle(tmp_path, signing_key)
    f = bundle / name
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    code, out = verify(bundle, keys_dir)
    assert code == 1
    assert name in out and "sha256" in out


def test_truncated_and_missing_files_fail(tmp_path: Path, signing_key: SigningKey, keys_dir: Path) -> None:
    bundle = make_bundle(tmp_path, signing_key)
    (bundle / "cpu-int4" / "model.onnx").write_bytes(b"\x08")
    (bundle / "cpu-int4" / "genai_config.json").unlink()
    code, out = verify(bundle, keys_dir)
    assert code == 1
    assert "size is 1 bytes" in out and "missing" in out


def test_a_path_escaping_the_bundle_fails(tmp_path: Path, signing_key: SigningKey, keys_dir: Path) -> None:
    bundle = make_bundle(tmp_path, signing_key)
    doc = json.loads((bundle / "manifest.json").read_text())
    doc["variants"][0]["files"][0]["path"] = "../x"
    # Signed by the trusted key, so only the path check can catch it.
    from edge_agent.signing import detached_signature

    data = json.dumps(doc).encode()
    (bundle / "manifest.json").write_bytes(data)
    (bundle / "manifest.sig").write_bytes(detached_signature(signing_key, data))
    code, out = verify(bundle, keys_dir)
    assert code == 1
    assert "variants.0.files.0.path" in out and "escapes the bundle" in out


def test_a_symlink_in_the_bundle_fails(tmp_path: Path, signing_key: SigningKey, keys_dir: Path) -> None:
    bundle = make_bundle(tmp_path, signing_key)
    target = bundle / "cpu-int4" / "model.onnx"
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(target.read_bytes())
    target.unlink()
    target.symlink_to(outside)
    code, out = verify(bundle, keys_dir)
    assert code == 1
    assert "symlink" in out


def test_unsigned_and_malformed_manifests_fail(
    tmp_path: Path, signing_key: SigningKey, keys_dir: Path
) -> None:
    bundle = make_bundle(tmp_path, signing_key)
    (bundle / "manifest.sig").unlink()
    code, out = verify(bundle, keys_dir)
    assert code == 1 and "no detached signature" in out
    code, out = verify(tmp_path, keys_dir)
    assert code == 1 and "no manifest.json" in out
