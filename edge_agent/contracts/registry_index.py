"""The registry index (`slmops.index/1`): what a registry holds, each release pinned by its manifest hash.

`index.json` sits at the registry root beside `index.sig` (a detached signature over its exact bytes).
Readers (fleet tools, `slmops registry ls`, devices that resolve name@version) find a release's
manifest at `manifest_path` and check it against `manifest_sha256` before trusting anything else.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from edge_agent.contracts.common import Contract, Name, RelPath, SemVer, Sha256, utcnow

INDEX_SCHEMA = "slmops.index/1"


class IndexEntry(Contract):
    name: Name
    version: SemVer
    manifest_path: RelPath = Field(description="bundles/<name>/<version>/manifest.json")
    manifest_sha256: Sha256
    created: datetime
    description: str = ""
    task: Literal["chat", "completion"] = "chat"
    variants: list[Name] = Field(default_factory=list)
    size_bytes: int = Field(0, ge=0, description="all files of the bundle")
    stored_bytes: int | None = Field(
        None,
        ge=0,
        description="bytes of its files whose content no earlier release in the registry holds: "
        "what it adds to a registry that stores each content once",
    )
    key_id: str = Field(description="key that signed the manifest")

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class RegistryIndex(Contract):
    schema_: Literal["slmops.index/1"] = Field(INDEX_SCHEMA, alias="schema")
    updated: datetime = Field(default_factory=utcnow)
    bundles: list[IndexEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> RegistryIndex:
        refs = [b.ref for b in self.bundles]
        if len(set(refs)) != len(refs):
            raise ValueError("an index lists each name@version once")
        return self

    def find(self, name: str, version: str | None = None) -> IndexEntry:
        """The entry for name@version, or the newest version of `name` when version is None."""
        matches = [b for b in self.bundles if b.name == name and version in (None, b.version)]
        if not matches:
            raise KeyError(f"{name}@{version or '*'} is not in the registry index")
        return max(matches, key=lambda b: semver_key(b.version))


def semver_key(version: str) -> tuple:
    """A sort key with SemVer 2.0 precedence (semver.org, item 11): build metadata is ignored; a
    pre-release sorts before its release; pre-release identifiers compare left to right, numeric
    ones as numbers and below alphanumeric ones (ASCII order), and a longer list wins a tie."""
    core, _, pre = version.split("+", 1)[0].partition("-")
    nums = tuple(int(x) for x in core.split("."))
    if not pre:
        return (*nums, 1, ())
    idents = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (*nums, 0, idents)


__all__ = ["INDEX_SCHEMA", "IndexEntry", "RegistryIndex", "semver_key"]
