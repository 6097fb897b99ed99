"""The contracts every part of slmops agrees on (DESIGN.md sections 3, 5 and 8).

They live in the edge agent because it is the side that must accept them; the build side, the fleet
tools and bench import them from here. `manifests/schemas/` holds their JSON Schema export.
"""

from edge_agent.contracts.bench_record import BENCH_SCHEMA, BenchMeta, BenchRecord, Quality, Summary
from edge_agent.contracts.common import FileEntry, check_relative_path
from edge_agent.contracts.desired import (
    DESIRED_SCHEMA,
    BundleRef,
    DeploymentPolicy,
    DesiredState,
    VariantPolicy,
)
from edge_agent.contracts.events import (
    EVENT_SCHEMA,
    REPORTED_SCHEMA,
    TERMINAL_STATES,
    ActiveModel,
    DeploymentState,
    ErrorCode,
    Event,
    EventError,
    Progress,
    ReportedState,
    StoreUsage,
)
from edge_agent.contracts.manifest import (
    BUNDLE_SCHEMA,
    Adapter,
    AdapterBase,
    AdapterCard,
    AdapterGeneration,
    AdapterInfo,
    AdapterPrompt,
    AdapterScore,
    BundleManifest,
    GenerationDefaults,
    Quantization,
    SourceInfo,
    Variant,
    VariantEval,
    weights_digest,
)
from edge_agent.contracts.registry_index import INDEX_SCHEMA, IndexEntry, RegistryIndex

# Exported as JSON Schema to manifests/schemas/<file>; a test fails when they drift.
SCHEMA_FILES: dict[str, type] = {
    "bundle-manifest.schema.json": BundleManifest,
    "adapter-card.schema.json": AdapterCard,
    "desired-state.schema.json": DesiredState,
    "event.schema.json": Event,
    "reported-state.schema.json": ReportedState,
    "bench-record.schema.json": BenchRecord,
    "registry-index.schema.json": RegistryIndex,
}

__all__ = [
    "BENCH_SCHEMA",
    "BUNDLE_SCHEMA",
    "DESIRED_SCHEMA",
    "EVENT_SCHEMA",
    "INDEX_SCHEMA",
    "REPORTED_SCHEMA",
    "SCHEMA_FILES",
    "TERMINAL_STATES",
    "ActiveModel",
    "Adapter",
    "AdapterBase",
    "AdapterCard",
    "AdapterGeneration",
    "AdapterInfo",
    "AdapterPrompt",
    "AdapterScore",
    "BenchMeta",
    "BenchRecord",
    "BundleManifest",
    "BundleRef",
    "DeploymentPolicy",
    "DeploymentState",
    "DesiredState",
    "ErrorCode",
    "Event",
    "EventError",
    "FileEntry",
    "GenerationDefaults",
    "IndexEntry",
    "Progress",
    "Quality",
    "Quantization",
    "RegistryIndex",
    "ReportedState",
    "SourceInfo",
    "StoreUsage",
    "Summary",
    "Variant",
    "VariantEval",
    "VariantPolicy",
    "check_relative_path",
    "weights_digest",
]
