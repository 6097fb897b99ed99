"""`slmops bundle`, `publish` and `registry ls`: signed bundles, an atomic registry, a signed index."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from build_side.bundle import AdapterFile, BundleSettings, assemble
from build_side.registry import publish, read_index
from edge_agent.bundle_check import verify_bundle
from edge_agent.errors import BuildError, BundleError, PublishConflictError, SignatureError
from edge_agent.signing import SigningKey, TrustedKeys
from tests.conftest import cli


def slmops(*args: str, home: Path | None = None) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, **({"SLMOPS_HOME": str(home)} if home else {}))
    return subprocess.run(cli("slmops", *args), capture_output=True, text=True, timeout=300, env=env)


def test_bundle_cli_writes_a_signed_bundle_that_verifies(
    tiny_convert_dir: Path, tmp_path: Path, signing_key: SigningKey, keys_dir: Path
) -> None:
    key_file = keys_dir / f"{signing_key.key_id}.key"
    out = tmp_path / "bundles"
    proc = slmops(
        "bundle", str(tiny_convert_dir), "-n", "tiny-chat", "--version", "1.2.0", "-o", str(out),
        "--key", str(key_file), "--temperature", "0.2", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["variants"] == ["cpu-fp32", "cpu-int4"]
    bundle = out / "tiny-chat" / "1.2.0"
    report = verify_bundle(bundle, TrustedKeys([signing_key.public]))
    assert report.ok and report.key_id == signing_key.key_id
    m = report.manifest
    int4 = m.variant("cpu-int4")
    assert int4.eval is not None and int4.eval.top1_agreement is not None
    assert int4.quantization.block_size == 32 and int4.min_memory_mb > int4.eval.size_bytes / 2**20
    assert m.generation_defaults.temperature == 0.2
    assert m.generation_defaults.chat_template_file == "chat_template.jinja"
    assert m.source.tools["onnxruntime-genai"]
    foundry = json.loads((bundle / "cpu-int4" / "inference_model.json").read_text())
    assert foundry["Name"] == "tiny-chat-cpu-int4"
    assert (
        foundry["PromptTemplate"]["prompt"]
        == "<|im_start|>user\n{Content}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert "cpu-int4/inference_model.json" in {f.path for f in int4.files}
    verify = slmops("manifest", "verify", str(bundle), "-k", str(keys_dir))
    assert verify.returncode == 0 and "OK tiny-chat@1.2.0" in verify.stdout


def test_publish_is_atomic_idempotent_and_refuses_a_changed_version(
    make_bundle, tmp_path: Path, signing_key: SigningKey, other_key: SigningKey
) -> None:
    registry = tmp_path / "registry"
    bundle = make_bundle("1.0.0")
    first = publish(bundle, registry, signing_key)
    assert first.published and (registry / "bundles/tiny-chat/1.0.0/manifest.json").is_file()
    assert (registry / "bundles/tiny-chat/1.0.0").stat().st_mode & 0o055 == 0o055  # a web server can read it
    index_before = (registry / "index.json").read_bytes()
    again = publish(bundle, registry, signing_key)
    assert not again.published and (registry / "index.json").read_bytes() == index_before

    changed = make_bundle("1.0.0", variants=("cpu-fp32",), root=tmp_path / "other")
    with pytest.raises(PublishConflictError, match=r"already published .* different content"):
        publish(changed, registry, signing_key)
    assert json.loads((registry / "bundles/tiny-chat/1.0.0/manifest.json").read_text())["variants"][0][
        "id"
    ] == ("cpu-int4")

    # A bundle that fails verification leaves no trace, not even a temporary folder.
    broken = make_bundle("2.0.0", root=tmp_path / "broken")
    (broken / "cpu-int4" / "genai_config.json").write_text("{}")
    with pytest.raises(BundleError, match=r"genai_config\.json"):
        publish(broken, registry, signing_key)
    assert sorted(p.name for p in (registry / "bundles/tiny-chat").iterdir()) == ["1.0.0"]

    # A bundle signed by a key the registry does not know is refused.
    with pytest.raises(SignatureError, match="not trusted"):
        publish(make_bundle("3.0.0", root=tmp_path / "o", key=other_key), registry, signing_key)

    read = read_index(registry, TrustedKeys([signing_key.public]))
    assert read.verified and [b.ref for b in read.index.bundles] == ["tiny-chat@1.0.0"]
    assert (registry / "keys" / f"{signing_key.key_id}.pub").is_file()


def test_registry_ls_reads_a_directory_and_a_url(
    make_bundle, registry_dir: Path, registry_server: str, signing_key: SigningKey, keys_dir: Path
) -> None:
    for version in ("1.0.0", "1.1.0"):
        publish(make_bundle(version), registry_dir, signing_key)
    for location in (str(registry_dir), registry_server):
        proc = slmops("registry", "ls", location, "-k", str(keys_dir), "--json")
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["signature"]["verified"] is True
        assert [(b["name"], b["version"]) for b in doc["bundles"]] == [
            ("tiny-chat", "1.0.0"),
            ("tiny-chat", "1.1.0"),
        ]
    text = slmops("registry", "ls", registry_server, "-k", str(keys_dir))
    assert "tiny-chat" in text.stdout and "1.1.0" in text.stdout and "(trusted)" in text.stdout
    # a tampered index is listed but flagged
    (registry_dir / "index.json").write_text(
        (registry_dir / "index.json").read_text().replace("1.1.0", "9.9.9")
    )
    flagged = slmops("registry", "ls", str(registry_dir), "-k", str(keys_dir))
    assert flagged.returncode == 0 and "not verified" in flagged.stderr


def test_assembled_bundle_carries_adapter_files(
    tiny_convert_dir: Path, tmp_path: Path, signing_key: SigningKey
) -> None:
    from build_side.finetune.export_adapters import write_card
    from edge_agent.adapters import folder_digest
    from edge_agent.contracts import AdapterCard, AdapterPrompt

    adapter = tmp_path / "style.onnx_adapter"
    adapter.write_bytes(b"adapter-bytes")
    base = folder_digest(tiny_convert_dir / "cpu-int4")
    card = AdapterCard(
        name="style",
        trained_for="terse answers",
        prompt=AdapterPrompt(system="Be terse."),
        base_weights_sha256=base,
    )
    write_card(card, adapter)
    settings = BundleSettings(
        name="tiny-chat", version="1.0.0", variants=["cpu-fp32", "cpu-int4"],
        adapters=[{"name": "style", "path": adapter}],
    )  # fmt: skip
    result = assemble(tiny_convert_dir, tmp_path / "b", settings, signing_key)
    [a] = result.manifest.adapters
    # only the variant whose weights the card names gets the adapter
    assert a.variants == ["cpu-int4"] and a.files[0].path == "adapters/style.onnx_adapter"
    assert (a.trained_for, a.prompt.system, a.bases[0].weights_sha256) == ("terse answers", "Be terse.", base)
    assert not (result.path / "adapters" / "style.adapter.json").exists()  # the manifest carries the card
    assert verify_bundle(result.path, TrustedKeys([signing_key.public])).ok
    shutil.rmtree(result.path)

    # an adapter made for other weights is refused before anything is signed
    write_card(card.model_copy(update={"base_weights_sha256": "ef" * 32}), adapter)
    with pytest.raises(BuildError, match="none of the bundle's variants"):
        assemble(tiny_convert_dir, tmp_path / "b", settings, signing_key)
    forced = settings.model_copy(
        update={"adapters": [AdapterFile(name="style", path=adapter, variants=["cpu-int4"])]}
    )
    with pytest.raises(BuildError, match="not cpu-int4's"):
        assemble(tiny_convert_dir, tmp_path / "b", forced, signing_key)
    (tmp_path / "x.onnx_adapter").write_bytes(b"no card beside it")
    with pytest.raises(BuildError, match="no adapter card"):
        assemble(
            tiny_convert_dir,
            tmp_path / "b",
            settings.model_copy(
                update={"adapters": [AdapterFile(name="x", path=tmp_path / "x.onnx_adapter")]}
            ),
            signing_key,
        )


def test_publish_takes_a_key_folder_as_the_default_is_one(
    make_bundle, registry_dir: Path, signing_key: SigningKey, keys_dir: Path, tmp_path: Path
) -> None:
    bundle = make_bundle("1.0.0")
    done = slmops("publish", str(bundle), "-r", str(registry_dir), "-k", str(keys_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (registry_dir / "bundles/tiny-chat/1.0.0/manifest.json").is_file()
    empty = tmp_path / "no-keys"
    empty.mkdir()
    refused = slmops("publish", str(bundle), "-r", str(registry_dir), "-k", str(empty))
    assert refused.returncode != 0 and "no signing key" in refused.stdout + refused.stderr
