"""The one owner of loaded models: load beside the current one, probe, swap, release when idle.

The reconciler drives it through the `Activator` seam (load_candidate / promote / discard); the API
takes a `Lease` per request. A swap only changes which model new leases get: requests already
running keep theirs and finish on the old model, which is released when its last lease ends.
Loading walks the chosen provider list and records every provider it had to fall back past.
A model whose memory estimate exceeds what is free is refused before it loads, with both figures.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_agent import adapters as adapter_files
from edge_agent import memory, probing
from edge_agent.activation import Candidate
from edge_agent.contracts import AdapterInfo, BundleManifest, GenerationDefaults, VariantPolicy
from edge_agent.errors import (
    ContractError,
    HealthCheckError,
    ModelRuntimeError,
    NotReadyError,
    ProviderUnavailableError,
    UnknownAdapterError,
    UnknownModelError,
)
from edge_agent.providers.selection import Choice, choose_variant
from edge_agent.runtime import LoadedModel
from edge_agent.serving.settings import RuntimeSettings

log = logging.getLogger("edge_agent.serving")

MANIFEST_FILE = "manifest.json"
UNVERSIONED = "0.0.0"


@dataclass
class ServedModel:
    """A loaded variant with what the API needs to serve it; `refs` counts requests using it."""

    name: str
    version: str
    variant_id: str
    provider: str
    install_dir: Path
    model: LoadedModel | None
    defaults: GenerationDefaults = field(default_factory=GenerationDefaults)
    chat_template: str | None = None
    adapter_infos: dict[str, AdapterInfo] = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)
    load_s: float = 0.0
    rss_mb: float = 0.0  # the process's resident memory once this model loaded and answered the probe
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    refs: int = 0
    retired: bool = False

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def adapters(self) -> list[str]:
        return list(self.model.adapter_names) if self.model else []

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "version": self.version,
            "ref": self.ref,
            "variant": self.variant_id,
            "provider": self.provider,
            "fallbacks": list(self.fallbacks),
            "adapters": self.adapters,
            "install_dir": str(self.install_dir),
            "loaded_at": self.loaded_at.isoformat(),
            "load_s": round(self.load_s, 3),
            "rss_mb": round(self.rss_mb, 1),
            "in_flight": self.refs,
        }


class Lease:
    """A request's hold on one served model (and the adapter it asked for). Release exactly once."""

    def __init__(self, host: ModelHost, served: ServedModel, adapter: str | None) -> None:
        self.host = host
        self.served = served
        self.adapter = adapter
        self._released = False

    @property
    def model(self) -> LoadedModel:
        assert self.served.model is not None, "a leased model is never released"
        return self.served.model

    @property
    def model_id(self) -> str:
        """What the API answers as `model`: name@version, with ':adapter' when one was asked for."""
        return self.served.ref + (f":{self.adapter}" if self.adapter else "")

    @property
    def adapter_info(self) -> AdapterInfo | None:
        return self.served.adapter_infos.get(self.adapter) if self.adapter else None

    @property
    def defaults(self) -> GenerationDefaults:
        """The bundle's generation defaults with the adapter's own on top."""
        info = self.adapter_info
        if info is None:
            return self.served.defaults
        g = info.generation.model_dump(exclude={"max_tokens"}, exclude_none=True)
        return self.served.defaults.model_copy(update=g)

    @property
    def default_max_tokens(self) -> int | None:
        info = self.adapter_info
        return info.generation.max_tokens if info else None

    @property
    def system_prompt(self) -> str | None:
        """The system turn the adapter was trained with (applied when the request has none)."""
        info = self.adapter_info
        return info.prompt.system if info else None

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.host._release(self.served)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def parse_model_id(model_id: str) -> tuple[str, str | None, str | None]:
    """'name[@version][:adapter]' -> (name, version or None, adapter or None)."""
    base, _, adapter = model_id.partition(":")
    name, _, version = base.partition("@")
    return name, version or None, adapter or None


class ModelHost:
    """Implements `edge_agent.activation.Activator`; thread-safe."""

    def __init__(self, settings: RuntimeSettings | None = None) -> None:
        self.settings = settings or RuntimeSettings()
        self._lock = threading.Lock()
        self._current: ServedModel | None = None
        self._retired: list[ServedModel] = []
        self.swaps = 0
        self.released = 0

    # --- choosing and loading ---------------------------------------------------------------

    def choose(self, manifest: BundleManifest, policy: VariantPolicy | None = None) -> Choice:
        """The variant choice with this device's local provider override applied."""
        return choose_variant(manifest, policy, override=self.settings.providers)

    def load_candidate(
        self,
        install_dir: Path,
        manifest: BundleManifest,
        variant_id: str,
        providers: list[str],
        timeout_s: float,
    ) -> Candidate:
        """Load the variant with the first provider that starts and answers the probe prompt."""
        install_dir = Path(install_dir)
        variant_dir = install_dir / variant_id
        deadline = time.monotonic() + timeout_s
        adapters = adapter_files.from_manifest(manifest, variant_id, install_dir)  # another base: refused
        need = manifest.variant(variant_id).min_memory_mb
        memory.check_fits(f"{manifest.ref} {variant_id}", need, self.settings.memory_reserve_mb)
        served = self._load_first(variant_dir, providers, timeout_s, manifest.ref)
        served.name, served.version, served.install_dir = manifest.name, manifest.version, install_dir
        served.defaults = manifest.generation_defaults
        try:
            if served.defaults.chat_template_file:
                served.chat_template = (variant_dir / served.defaults.chat_template_file).read_text()
        except OSError as exc:
            raise HealthCheckError(f"{manifest.ref}: the chat template did not load: {exc}") from exc
        self._load_adapters(served, adapters, deadline)
        return Candidate(install_dir, manifest, variant_id, served.provider, list(served.fallbacks), served)

    def promote(self, candidate: Candidate) -> None:
        self._swap_in(candidate.handle)

    def _swap_in(self, served: ServedModel) -> None:
        with self._lock:
            old, self._current = self._current, served
            if old is not None:
                old.retired = True
                self._retired.append(old)
                self.swaps += 1
        log.info(
            "serving %s (%s on %s)%s",
            served.ref,
            served.variant_id,
            served.provider,
            f", replacing {old.ref}" if old else "",
        )
        if old is not None:
            self._free_if_idle(old)

    def discard(self, candidate: Candidate) -> None:
        served: ServedModel = candidate.handle
        if served is not self._current:
            served.model = None

    def load_dir(
        self, path: Path, name: str | None = None, policy: VariantPolicy | None = None
    ) -> ServedModel:
        """Standalone serving: a bundle or install dir (has manifest.json) or one variant folder."""
        path = Path(path)
        if (path / MANIFEST_FILE).exists():
            try:
                manifest = BundleManifest.model_validate_json((path / MANIFEST_FILE).read_bytes())
            except ValueError as exc:
                raise ContractError(path / MANIFEST_FILE, str(exc)) from exc
            choice = self.choose(manifest, policy)
            for reason in choice.reasons:
                log.info("variant choice: %s", reason)
            served = self.load_candidate(path, manifest, choice.variant_id, choice.providers, 300.0).handle
        elif (path / "genai_config.json").exists():
            providers = self.settings.providers or ["CPUExecutionProvider"]
            need = memory.estimate_model_mb(path)
            memory.check_fits(str(path), need, self.settings.memory_reserve_mb)
            served = self._load_first(path, providers, 300.0, str(path))
            served.name, served.version = _slug(path.name), UNVERSIONED
            self._load_adapters(served, adapter_files.from_folder(path), time.monotonic() + 300.0)
        else:
            raise ModelRuntimeError(
                f"{path}: neither a bundle (manifest.json) nor a variant (genai_config.json)"
            )
        if name:
            served.name = name
        self._swap_in(served)
        return served

    def _load_first(
        self, variant_dir: Path, providers: list[str], timeout_s: float, what: str
    ) -> ServedModel:
        import onnxruntime as ort  # with the first model, not with the agent

        deadline = time.monotonic() + timeout_s
        available = set(ort.get_available_providers())
        fallbacks: list[str] = []
        unavailable_only = True
        for provider in providers:
            if provider not in available:
                fallbacks.append(f"{provider}: not available on this device")
                log.warning("%s: %s is not available here, falling back", what, provider)
                continue
            unavailable_only = False
            started = time.monotonic()
            try:
                model = LoadedModel(variant_dir, provider, session_options=self.settings.session_options)
                served = ServedModel(what, UNVERSIONED, variant_dir.name, provider, variant_dir, model)
                self._probe(served, deadline)
            except ModelRuntimeError as exc:
                fallbacks.append(f"{provider}: {exc}")
                log.warning("%s: %s failed (%s), falling back", what, provider, exc)
                continue
            served.load_s = time.monotonic() - started
            served.rss_mb = memory.rss_mb()
            served.fallbacks = fallbacks
            if fallbacks:
                log.warning("%s: running on %s after falling back past %s", what, provider, fallbacks)
            return served
        detail = "; ".join(fallbacks) or "no providers to try"
        if unavailable_only:
            raise ProviderUnavailableError(f"{what}: no provider could start ({detail})")
        raise HealthCheckError(f"{what}: did not load and answer the probe ({detail})")

    def _load_adapters(
        self, served: ServedModel, resolved: list[adapter_files.ResolvedAdapter], deadline: float
    ) -> None:
        """Load each adapter on the served model and ask it one request of its task (the health gate
        probes every adapter once). Base mismatches were refused before anything loaded."""
        assert served.model is not None
        for adapter in resolved:
            try:
                served.model.load_adapter(adapter.name, adapter.path)
            except ModelRuntimeError as exc:
                raise HealthCheckError(
                    f"{served.variant_id}: adapter {adapter.name!r} did not load: {exc}"
                ) from exc
            served.adapter_infos[adapter.name] = adapter.info
            self._probe(served, deadline, adapter.info)

    def _probe(self, served: ServedModel, deadline: float, adapter: AdapterInfo | None = None) -> None:
        assert served.model is not None
        answer = probing.ask(
            served.model,
            self.settings.probe_prompt,
            self.settings.probe_max_tokens,
            adapter=adapter,
            chat_template=served.chat_template,
            deadline=deadline,
        )
        what = served.variant_id + (f" adapter {adapter.name!r}" if adapter else "")
        log.info("%s answered the probe in %d tokens", what, answer.tokens)

    # --- serving ----------------------------------------------------------------------------

    @property
    def current(self) -> ServedModel | None:
        return self._current

    def acquire(self, model_id: str) -> Lease:
        """A lease on the model a request names; 404-style errors when nothing by that name is served."""
        name, version, adapter = parse_model_id(model_id)
        with self._lock:
            served = self._current
            if served is None:
                raise NotReadyError("no model is loaded yet")
            if name != served.name or (version is not None and version != served.version):
                raise UnknownModelError(
                    f"model {model_id!r} is not served here; try one of {self._model_ids(served)}", "model"
                )
            if adapter is not None and adapter not in served.adapters:
                raise UnknownAdapterError(
                    f"{served.ref} has no adapter {adapter!r} (has {served.adapters})", "model"
                )
            served.refs += 1
        return Lease(self, served, adapter)

    def _release(self, served: ServedModel) -> None:
        with self._lock:
            served.refs -= 1
        self._free_if_idle(served)

    def _free_if_idle(self, served: ServedModel) -> None:
        with self._lock:
            if not (served.retired and served.refs == 0 and served in self._retired):
                return
            self._retired.remove(served)
            served.model = None  # onnxruntime frees the session with its last reference
            self.released += 1
        log.info("released %s (%s)", served.ref, served.variant_id)

    def model_ids(self) -> list[str]:
        served = self._current
        return self._model_ids(served) if served else []

    @staticmethod
    def _model_ids(served: ServedModel) -> list[str]:
        ids = [served.name, served.ref]
        return ids + [f"{served.name}:{a}" for a in served.adapters]

    def adapter_info(self, model_id: str) -> AdapterInfo | None:
        """What `name:adapter` is for, for /v1/models; None for a base model id."""
        served = self._current
        _, _, adapter = parse_model_id(model_id)
        return served.adapter_infos.get(adapter) if served and adapter else None

    def status(self) -> dict[str, Any]:
        with self._lock:
            current = self._current
            return {
                "ready": current is not None,
                "active": current.describe() if current else None,
                "retired": [s.describe() for s in self._retired],
                "swaps": self.swaps,
                "released": self.released,
            }

    def close(self) -> None:
        with self._lock:
            for served in [self._current, *self._retired]:
                if served is not None:
                    served.model = None
            self._current, self._retired = None, []


def _slug(text: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    return slug or "model"
