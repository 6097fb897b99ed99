"""Serving fixtures: the tiny LoRA-ready variant, signed bundles of it, and a running API server."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from edge_agent.signing import SigningKey
from tests.serving.lora_fixture import build_lora_variant

BUNDLE_NAME = "tiny-chat"
VARIANT = "cpu-fp32"


@pytest.fixture(scope="session")
def lora_variant(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> tuple[Path, dict[str, Path]]:
    """(variant folder with LoRA inputs, {'alpha': adapter file, 'beta': adapter file}), built once."""
    work = tmp_path_factory.mktemp("lora")
    return build_lora_variant(tiny_model_dir, work / VARIANT, work)


MakeBundle = Callable[..., Path]


@pytest.fixture(scope="session")
def serving_bundle(
    tmp_path_factory: pytest.TempPathFactory,
    lora_variant: tuple[Path, dict[str, Path]],
    signing_key: SigningKey,
) -> MakeBundle:
    """Factory: `make(version, providers=[...], device='cpu')` -> a signed bundle dir with two adapters."""
    from build_side.manifest_io import file_entries, write_signed_manifest
    from edge_agent.contracts import (
        Adapter,
        AdapterBase,
        BundleManifest,
        GenerationDefaults,
        SourceInfo,
        Variant,
    )

    variant_dir, adapters = lora_variant
    root = tmp_path_factory.mktemp("serving-bundles")
    made = 0

    def make(
        version: str = "1.0.0",
        providers: tuple[str, ...] = ("CPUExecutionProvider",),
        device: str = "cpu",
        defaults: GenerationDefaults | None = None,
        cards: dict[str, dict] | None = None,
        base_sha256: str | None = None,
    ) -> Path:
        """`cards` adds card fields per adapter (prompt, generation ...); `base_sha256` claims another
        base for every adapter (an adapter exported for other weights)."""
        nonlocal made
        made += 1
        bundle = root / str(made) / BUNDLE_NAME / version
        shutil.copytree(variant_dir, bundle / VARIANT)
        (bundle / "adapters").mkdir()
        for path in adapters.values():
            shutil.copy(path, bundle / "adapters" / path.name)
        variant = Variant(
            id=VARIANT,
            precision="fp32",
            device=device,
            execution_providers=list(providers),
            min_memory_mb=64,
            files=file_entries(bundle, VARIANT),
        )
        base = base_sha256 or variant.weights_digest()
        manifest = BundleManifest(
            name=BUNDLE_NAME,
            version=version,
            source=SourceInfo(kind="hf-folder", ref="tiny-llama"),
            generation_defaults=defaults or GenerationDefaults(),
            variants=[variant],
            adapters=[
                Adapter(
                    name=name,
                    files=[
                        e
                        for e in file_entries(bundle, "adapters")
                        if e.path.endswith(f"/{name}.onnx_adapter")
                    ],
                    bases=[
                        AdapterBase(
                            variant=VARIANT, weights_sha256=base, file=f"adapters/{name}.onnx_adapter"
                        )
                    ],
                    trained_for="test: random weights",
                    **(cards or {}).get(name, {}),
                )
                for name in adapters
            ],
        )
        write_signed_manifest(bundle, manifest, signing_key)
        return bundle

    return make


@pytest.fixture(scope="module")
def module_bundle(serving_bundle: MakeBundle) -> Path:
    return serving_bundle("1.0.0")


class Running:
    """A model host and its API on a real socket."""

    def __init__(self, host, server, app) -> None:  # type: ignore[no-untyped-def]
        self.host, self.server, self.app = host, server, app

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, **kw):  # type: ignore[no-untyped-def]
        import openai

        kw.setdefault("api_key", "unused")
        return openai.OpenAI(base_url=f"{self.url}/v1", max_retries=0, timeout=60, **kw)


@contextmanager
def serving(bundle: Path, **api: object) -> Iterator[Running]:
    from edge_agent.http_server import BackgroundServer
    from edge_agent.serving.api import create_app
    from edge_agent.serving.model_host import ModelHost
    from edge_agent.serving.settings import ApiSettings

    host = ModelHost()
    host.load_dir(bundle)
    app = create_app(host, ApiSettings(port=0, **api))  # type: ignore[arg-type]
    with BackgroundServer(app) as server:
        yield Running(host, server, app)
    host.close()
