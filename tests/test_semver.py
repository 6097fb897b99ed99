"""SemVer 2.0 precedence (semver.org, item 11), with the spec's own examples."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from edge_agent.contracts.registry_index import IndexEntry, RegistryIndex


def semver_key(version: str) -> tuple:
    from edge_agent.contracts.registry_index import semver_key as key

    return key(version)


SPEC_ORDER = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
]


def test_the_spec_examples_sort_in_the_spec_order() -> None:
    shuffled = SPEC_ORDER[:]
    random.Random(0).shuffle(shuffled)
    assert sorted(shuffled, key=semver_key) == SPEC_ORDER
    assert sorted(["2.1.1", "2.1.0", "2.0.0", "1.0.0"], key=semver_key) == [
        "1.0.0",
        "2.0.0",
        "2.1.0",
        "2.1.1",
    ]


def test_numeric_identifiers_compare_as_numbers() -> None:
    assert semver_key("1.0.0-rc.9") < semver_key("1.0.0-rc.10")
    assert semver_key("1.0.0-rc.10") < semver_key("1.0.0")


def test_build_metadata_is_ignored() -> None:
    assert semver_key("1.0.0+build.5") == semver_key("1.0.0+other")
    assert semver_key("1.0.0-rc.1+b") == semver_key("1.0.0-rc.1")


def test_the_index_finds_the_newest_by_precedence() -> None:
    def entry(version: str) -> IndexEntry:
        return IndexEntry(
            name="m",
            version=version,
            manifest_path=f"bundles/m/{version}/manifest.json",
            manifest_sha256="ab" * 32,
            created=datetime.now(UTC),
            key_id="k",
        )

    index = RegistryIndex(bundles=[entry(v) for v in ("1.0.0-rc.9", "1.0.0-rc.10", "1.0.0-alpha.beta")])
    assert index.find("m").version == "1.0.0-rc.10"
