"""The contracts: exported schemas match the models, and bad documents are refused clearly."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edge_agent.contracts import BundleManifest, DesiredState, Event, check_relative_path
from edge_agent.contracts.export import DEFAULT_DIR, schema_texts

GOOD_FILE = {"path": "cpu-int4/model.onnx", "size": 3, "sha256": "a" * 64}


def manifest_doc(**overrides: object) -> dict:
    doc = {
        "schema": "slmops.bundle/1",
        "name": "tiny-chat",
        "version": "1.0.0",
        "source": {"kind": "hf-folder", "ref": "/models/tiny"},
        "variants": [
            {
                "id": "cpu-int4",
                "precision": "int4",
                "execution_providers": ["CPUExecutionProvider"],
                "min_memory_mb": 64,
                "files": [GOOD_FILE],
            }
        ],
    }
    doc.update(overrides)
    return doc


def test_exported_schemas_match_the_models() -> None:
    for name, text in schema_texts().items():
        path = DEFAULT_DIR / name
        assert path.is_file(), f"{path} missing: run python -m edge_agent.contracts.export"
        assert path.read_text() == text, (
            f"{path} drifted from the model: run python -m edge_agent.contracts.export"
        )


def test_manifest_round_trips() -> None:
    m = BundleManifest.model_validate(manifest_doc())
    again = BundleManifest.model_validate(m.model_dump(mode="json", by_alias=True))
    assert again == m
    assert m.ref == "tiny-chat@1.0.0"
    assert m.variant("cpu-int4").precision == "int4"


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../x", "escapes"),
        ("cpu/../../x", "escapes"),
        ("/etc/passwd", "not a relative path"),
        ("cpu/./model.onnx", "not normalised"),
        ("cpu//model.onnx", "not normalised"),
        ("C:/x", "not a relative path"),
    ],
)
def test_unsafe_paths_are_refused(path: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_relative_path(path)
    doc = manifest_doc()
    doc["variants"][0]["files"] = [{**GOOD_FILE, "path": path}]
    with pytest.raises(ValidationError, match=reason):
        BundleManifest.model_validate(doc)


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": "Tiny_Chat"},
        {"version": "1.0"},
        {"unexpected": 1},
        {"variants": []},
    ],
)
def test_bad_manifests_are_refused(overrides: dict) -> None:
    with pytest.raises(ValidationError):
        BundleManifest.model_validate(manifest_doc(**overrides))


def adapter_doc(**overrides: object) -> dict:
    path = "adapters/intent.onnx_adapter"
    base = {"variant": "cpu-int4", "weights_sha256": "c" * 64, "file": path}
    return {"name": "intent", "files": [{**GOOD_FILE, "path": path}], "bases": [base], **overrides}


def test_adapter_must_name_known_variants_and_its_own_files() -> None:
    ok = BundleManifest.model_validate(manifest_doc(adapters=[adapter_doc()]))
    assert ok.adapters[0].variants == ["cpu-int4"] and ok.adapters[0].prompt.answer_format == "text"
    gpu = adapter_doc(
        bases=[{"variant": "gpu", "weights_sha256": "c" * 64, "file": "adapters/intent.onnx_adapter"}]
    )
    with pytest.raises(ValidationError, match="unknown variants"):
        BundleManifest.model_validate(manifest_doc(adapters=[gpu]))
    elsewhere = adapter_doc(bases=[{"variant": "cpu-int4", "weights_sha256": "c" * 64, "file": "adapters/x"}])
    with pytest.raises(ValidationError, match="is not in its files"):
        BundleManifest.model_validate(manifest_doc(adapters=[elsewhere]))
    with pytest.raises(ValidationError, match="adapter names must be unique"):
        BundleManifest.model_validate(manifest_doc(adapters=[adapter_doc(), adapter_doc()]))
    with pytest.raises(ValidationError, match="bases"):  # the base it belongs to is required
        BundleManifest.model_validate(manifest_doc(adapters=[{**adapter_doc(), "bases": []}]))


def test_weights_digest_is_the_same_from_a_manifest_and_from_a_folder(tmp_path) -> None:
    from edge_agent.adapters import folder_digest
    from edge_agent.contracts import FileEntry, weights_digest
    from edge_agent.hashing import sha256_file

    folder = tmp_path / "cpu-int4"
    folder.mkdir()
    for name, data in (("model.onnx", b"graph"), ("model.onnx.data", b"weights"), ("tokenizer.json", b"{}")):
        (folder / name).write_bytes(data)
    entries = [
        FileEntry(path=f"cpu-int4/{f.name}", size=f.stat().st_size, sha256=sha256_file(f))
        for f in folder.iterdir()
    ]
    digest = weights_digest(entries, prefix="cpu-int4/")
    assert digest == folder_digest(folder)
    (folder / "tokenizer.json").write_bytes(b"{ }")  # not a weight: the base is the same
    assert folder_digest(folder) == digest
    (folder / "model.onnx.data").write_bytes(b"other weights")
    assert folder_digest(folder) != digest


def test_desired_state_and_event_defaults() -> None:
    d = DesiredState.model_validate(
        {
            "revision": 3,
            "deployment_id": "dep-1",
            "bundle": {
                "name": "tiny-chat",
                "version": "1.0.0",
                "manifest_url": "bundles/x",
                "manifest_sha256": "b" * 64,
            },
        }
    )
    assert d.policy.rollback_on_failure is True
    assert "signature" not in d.signed_payload()
    e = Event(device="dev-1", deployment_id="dep-1", seq=0, state="ACCEPTED")
    assert e.model_dump(mode="json", by_alias=True)["schema"] == "slmops.event/1"
    with pytest.raises(ValidationError):
        Event(device="dev-1", deployment_id="dep-1", seq=0, state="DONE")
