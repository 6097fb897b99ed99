"""Adapters as release parts on the device: each applies its own card (system prompt, generation
defaults), is listed with it in /v1/models, is probed once by the health gate, and one exported for
another base is refused before it loads."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from edge_agent.errors import HealthCheckError, IncompatibleError
from edge_agent.serving.model_host import ModelHost
from tests.conftest import cli
from tests.serving.conftest import BUNDLE_NAME, MakeBundle, serving

SYSTEM = "You answer operators with a single word."
CARDS = {
    "alpha": {
        "prompt": {"system": SYSTEM, "answer_format": "label", "labels": ["yes", "no"], "probe": "ok?"},
        "generation": {"max_tokens": 3},
    }
}


def test_an_adapter_is_asked_with_its_own_card(serving_bundle: MakeBundle) -> None:
    bundle = serving_bundle("7.0.0", cards=CARDS)
    with serving(bundle) as s:
        client = s.client()
        ask = [{"role": "user", "content": "status of the fleet"}]
        alpha = client.chat.completions.create(model=f"{BUNDLE_NAME}:alpha", messages=ask)
        # its max_tokens default: the random model would otherwise talk on far past three tokens
        assert alpha.usage.completion_tokens == 3 and alpha.choices[0].finish_reason == "length"
        beta = client.chat.completions.create(model=f"{BUNDLE_NAME}:beta", messages=ask, max_tokens=8)
        assert beta.usage.completion_tokens == 8  # no card defaults: the request's budget
        # its system prompt: alpha's prompt is the one the base gets when it is given that system turn
        base = client.chat.completions.create(
            model=BUNDLE_NAME, messages=[{"role": "system", "content": SYSTEM}, *ask], max_tokens=1
        )
        assert alpha.usage.prompt_tokens == base.usage.prompt_tokens
        plain = client.chat.completions.create(model=BUNDLE_NAME, messages=ask, max_tokens=1)
        assert plain.usage.prompt_tokens != base.usage.prompt_tokens
        # a request's own system turn wins over the card's
        own = client.chat.completions.create(
            model=f"{BUNDLE_NAME}:alpha", messages=[{"role": "system", "content": "Be brief."}, *ask]
        )
        assert own.usage.prompt_tokens < alpha.usage.prompt_tokens
        cards = {m.id: (m.model_extra or {}).get("adapter") for m in client.models.list().data}
        assert cards[BUNDLE_NAME] is None
        assert cards[f"{BUNDLE_NAME}:alpha"]["prompt"]["answer_format"] == "label"
        assert cards[f"{BUNDLE_NAME}:alpha"]["trained_for"] == "test: random weights"
        assert cards[f"{BUNDLE_NAME}:beta"]["prompt"]["system"] is None


def test_the_health_gate_probes_each_adapter(serving_bundle: MakeBundle, caplog) -> None:
    bundle = serving_bundle("7.1.0", cards=CARDS)
    caplog.set_level("INFO", logger="edge_agent.serving")
    host = ModelHost()
    host.load_dir(bundle)
    probed = [r.getMessage() for r in caplog.records if "answered the probe" in r.getMessage()]
    assert any("adapter 'alpha'" in m for m in probed) and any("adapter 'beta'" in m for m in probed)
    host.close()
    # an adapter file that onnxruntime cannot read fails the gate with its name in the error
    broken = serving_bundle("7.1.1")
    (broken / "adapters" / "beta.onnx_adapter").write_bytes(b"not an adapter")
    with pytest.raises(HealthCheckError, match="adapter 'beta' did not load"):
        ModelHost().load_dir(broken)


def test_an_adapter_for_another_base_is_refused(serving_bundle: MakeBundle) -> None:
    bundle = serving_bundle("7.2.0", base_sha256="ab" * 32)
    with pytest.raises(
        IncompatibleError, match=r"adapter 'alpha' was exported for base weights abababababab"
    ):
        ModelHost().load_dir(bundle)
    proc = subprocess.run(
        cli("edge-agent", "serve", "--bundle", str(bundle), "--port", "0"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "belongs to another base" in proc.stderr and "Traceback" not in proc.stderr


def test_the_manifest_lists_each_adapter_with_its_base(serving_bundle: MakeBundle) -> None:
    bundle = serving_bundle("7.3.0", cards=CARDS)
    doc = json.loads((bundle / "manifest.json").read_text())
    [variant] = doc["variants"]
    alpha = next(a for a in doc["adapters"] if a["name"] == "alpha")
    from edge_agent.contracts import BundleManifest

    manifest = BundleManifest.model_validate(doc)
    assert alpha["bases"] == [
        {
            "variant": variant["id"],
            "weights_sha256": manifest.variants[0].weights_digest(),
            "file": "adapters/alpha.onnx_adapter",
        }
    ]
    assert [f.path for f in manifest.files_for(variant["id"])][-2:] == [
        "adapters/alpha.onnx_adapter",
        "adapters/beta.onnx_adapter",
    ]
    assert Path(bundle / alpha["bases"][0]["file"]).is_file()
