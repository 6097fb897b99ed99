"""Fixtures every part's tests share: keys, a tiny real model, the real broker, a registry server.

The tiny model is a llama-family model with random weights and SmolLM2's real tokenizer, built once
per test session; tests marked `smollm2` use the real SmolLM2-135M-Instruct weights.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from edge_agent.signing import SigningKey

REPO = Path(__file__).resolve().parents[1]
MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883
VARIANT = "cpu-int4"
CHANGED = f"{VARIANT}/genai_config.json"  # the one small file `patch_release` changes


def cli(*args: str) -> list[str]:
    """argv for running a console script in a subprocess with this interpreter (works from worktrees)."""
    modules = {"slmops": "build_side", "edge-agent": "edge_agent", "bench": "bench"}
    return [sys.executable, "-m", modules[args[0]], *args[1:]]


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own SLMOPS_HOME; the source cache is shared per session (it is content-addressed)."""
    monkeypatch.setenv("SLMOPS_HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.setenv("SLMOPS_CACHE_DIR", str(_session_cache(tmp_path_factory)))


_CACHE: list[Path] = []


def _session_cache(factory: pytest.TempPathFactory) -> Path:
    if not _CACHE:
        _CACHE.append(Path(os.environ.get("SLMOPS_TEST_CACHE") or factory.mktemp("cache")))
    return _CACHE[0]


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="session")
def other_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory, signing_key: SigningKey) -> Path:
    d = tmp_path_factory.mktemp("keys")
    signing_key.save(d)
    return d


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    from build_side.sources import named_source_file

    return named_source_file("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Path:
    """A 2-layer llama with random weights and SmolLM2's real tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def mqtt_broker() -> tuple[str, int]:
    """The real Mosquitto on 127.0.0.1:1883 (.ci/run and ./dev test start it)."""
    try:
        socket.create_connection((MQTT_HOST, MQTT_PORT), timeout=2).close()
    except OSError as exc:
        pytest.fail(f"no MQTT broker on {MQTT_HOST}:{MQTT_PORT} ({exc}); start mosquitto (./dev test does)")
    return MQTT_HOST, MQTT_PORT


@pytest.fixture(scope="session")
def local_brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """Brokers started for this session by `any_broker` (stopped at the end if we started them)."""
    started: dict[str, object] = {}
    yield started
    for broker in started.values():
        broker.stop()  # type: ignore[attr-defined]


@pytest.fixture(params=["mosquitto", "rabbitmq", "nats"])
def any_broker(
    request: pytest.FixtureRequest, local_brokers: dict, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """The URL of each broker slmops runs on: Mosquitto (MQTT 5), RabbitMQ's MQTT and NATS (3.1.1).

    Started when not running (build_side.fleet.local_brokers); skipped where the broker is not
    installed, failed where it is installed but will not start.
    """
    import shutil

    from build_side.fleet import local_brokers as lb
    from build_side.fleet.errors import BrokerError

    name = request.param
    if name not in local_brokers:
        if name == "rabbitmq" and not shutil.which("rabbitmqctl"):
            pytest.skip("RabbitMQ is not installed")
        if name == "nats" and not shutil.which("nats-server"):
            pytest.skip("nats-server is not installed")
        try:
            local_brokers[name] = (
                lb.nats(workdir=tmp_path_factory.mktemp("nats")) if name == "nats" else lb.STARTERS[name]()
            )
        except BrokerError as exc:
            pytest.fail(f"{name}: {exc}")
    return local_brokers[name].url  # type: ignore[attr-defined]


@pytest.fixture
def fleet_id() -> str:
    """A fleet id unique to the test, so retained messages of other tests never leak in."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def registry_dir(tmp_path: Path) -> Path:
    d = tmp_path / "registry"
    d.mkdir()
    return d


@pytest.fixture
def registry_server(registry_dir: Path) -> Iterator[str]:
    """A real HTTP server (Range, HEAD, ETag) over `registry_dir` on a free port; yields its URL."""
    from build_side.registry_server import registry_app
    from edge_agent.http_server import BackgroundServer

    with BackgroundServer(registry_app(registry_dir)) as server:
        yield server.url


@pytest.fixture(scope="session")
def tiny_variants(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    """ONNX folders of the tiny model: {'cpu-fp32': dir, 'cpu-int4': dir}, built once per session by
    the convert stage (their parent folder is a convert output: it also holds `<id>.variant.json`)."""
    from build_side.convert import convert, parse_variant
    from edge_agent.contracts import SourceInfo

    root = tmp_path_factory.mktemp("tiny-onnx")
    specs = [parse_variant("cpu-fp32"), parse_variant("cpu-int4")]
    records = convert(tiny_model_dir, specs, root, SourceInfo(kind="hf-folder", ref="tiny-llama"))
    return {r.id: root / r.id for r in records}


@pytest.fixture
def make_bundle(tmp_path: Path, tiny_variants: dict[str, Path], signing_key: SigningKey):
    """Factory: a signed bundle of the tiny model, `make_bundle(version, variants=[...], name=...)` -> dir."""
    from build_side.bundle import BundleSettings, assemble

    convert_dir = next(iter(tiny_variants.values())).parent

    def make(
        version: str = "1.0.0",
        variants: tuple[str, ...] = ("cpu-int4",),
        name: str = "tiny-chat",
        root: Path | None = None,
        key: SigningKey = signing_key,
    ) -> Path:
        settings = BundleSettings(name=name, version=version, variants=list(variants))
        return assemble(convert_dir, root or tmp_path / "bundles", settings, key).path

    return make


@pytest.fixture
def patch_release(tmp_path: Path, tiny_variants: dict[str, Path], registry_dir: Path, signing_key):
    """Publish (or only build) tiny-chat@<version>: the same convert output, one small file changed."""
    from build_side.bundle import BundleSettings, assemble
    from build_side.registry import publish

    def make(version: str, publish_it: bool = True) -> Path:
        convert = tmp_path / f"convert-{version}"
        shutil.copytree(tiny_variants[VARIANT].parent, convert)
        config = convert / CHANGED
        data = json.loads(config.read_text())
        data["search"]["top_k"] = 7
        config.write_text(json.dumps(data, indent=4))
        settings = BundleSettings(name="tiny-chat", version=version, variants=[VARIANT])
        made = assemble(convert, tmp_path / "bundles", settings, signing_key).path
        return publish(made, registry_dir, signing_key).path if publish_it else made

    return make
