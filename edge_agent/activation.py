"""The seam between deploying a version and serving it.

The reconciler installs files; an `Activator` loads the new variant beside the one being served,
probes it (the health gate), and swaps it in, or discards it. The serving side's model host
implements it; `ProbeActivator` is the plain implementation used where nothing is served.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edge_agent.contracts import BundleManifest


@dataclass
class Candidate:
    """A loaded, probed variant that is not yet serving."""

    install_dir: Path
    manifest: BundleManifest
    variant_id: str
    provider: str
    fallbacks: list[str] = field(default_factory=list)  # "Provider: why it failed", in order tried
    handle: Any = None  # the loaded model, owned by the activator


class Activator(Protocol):
    def load_candidate(
        self,
        install_dir: Path,
        manifest: BundleManifest,
        variant_id: str,
        providers: list[str],
        timeout_s: float,
    ) -> Candidate:
        """Load and probe; raise HealthCheckError or ProviderUnavailableError (edge_agent.errors)."""
        ...

    def promote(self, candidate: Candidate) -> None:
        """Make the candidate the model that serves requests (requests in flight finish on the old one)."""
        ...

    def discard(self, candidate: Candidate) -> None: ...
