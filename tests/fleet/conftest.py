"""Fixtures of the fleet tests: a registry holding a few releases, scripted devices on the real broker,
and history databases on both engines (a SQLite file; a PostgreSQL database made and dropped per test).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_agent.contracts import BundleManifest, FileEntry, SourceInfo, Variant
from edge_agent.signing import SigningKey, TrustedKeys
from tests.fleet.scripted_device import ScriptedDevice

FAKE_FILE = FileEntry(path="cpu-int4/model.onnx", size=3, sha256="0" * 64)


def publish_release(registry: Path, name: str, version: str, key: SigningKey) -> Path:
    """A release's manifest in the registry (the operator reads only the manifest)."""
    from build_side.manifest_io import write_signed_manifest

    bundle = registry / "bundles" / name / version
    bundle.mkdir(parents=True)
    manifest = BundleManifest(
        name=name,
        version=version,
        source=SourceInfo(kind="hf-folder", ref="tiny"),
        variants=[
            Variant(
                id="cpu-int4",
                precision="int4",
                execution_providers=["CPUExecutionProvider"],
                min_memory_mb=64,
                files=[FAKE_FILE],
            )
        ],
    )
    write_signed_manifest(bundle, manifest, key)
    return bundle / "manifest.json"


@pytest.fixture
def registry(tmp_path: Path, signing_key: SigningKey) -> Path:
    root = tmp_path / "releases"
    for version in ("1.0.0", "2.0.0"):
        publish_release(root, "tiny-chat", version, signing_key)
    return root


@pytest.fixture
def key_file(keys_dir: Path, signing_key: SigningKey) -> Path:
    return keys_dir / f"{signing_key.key_id}.key"


@pytest.fixture
def scripted(
    mqtt_broker: tuple[str, int], fleet_id: str, signing_key: SigningKey
) -> Iterator[Callable[..., ScriptedDevice]]:
    """Factory: `scripted("dev-1", groups=("lab",), active="tiny-chat@1.0.0", fail={...})`, stopped after."""
    made: list[ScriptedDevice] = []

    def make(device: str, **kw: object) -> ScriptedDevice:
        d = ScriptedDevice(
            *mqtt_broker,
            fleet_id,
            device,
            TrustedKeys([signing_key.public]),
            **kw,  # type: ignore[arg-type]
        ).start()
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


@pytest.fixture(autouse=True)
def _clear_retained(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used a fleet, remove every retained message it left on the broker."""
    fleet = request.getfixturevalue("fleet_id") if "fleet_id" in request.fixturenames else None
    yield
    if fleet is None:
        return
    from build_side.fleet.broker import BrokerSession

    with BrokerSession("mqtt://127.0.0.1:1883", fleet) as session:
        session.subscribe(f"slmops/v1/{fleet}/#")
        session.sync()
        for msg in session.drain():
            if msg.retain and msg.payload:
                session.clear_retained(msg.topic)


# PostgreSQL -----------------------------------------------------------------------------------------

# A server where the tests may create databases; the machines here trust local connections.
POSTGRES = os.environ.get("SLMOPS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _postgres_answers() -> str | None:
    """None when the server takes connections, else why not."""
    import psycopg

    try:
        psycopg.connect(POSTGRES, connect_timeout=3).close()
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]
    return None


def _start_postgres() -> None:
    """Start the machine's PostgreSQL cluster(s) that are down (Debian's pg_ctlcluster), as .ci/run does."""
    if shutil.which("pg_lsclusters") is None:
        return
    listing = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        version, name, _port, status, *_ = line.split()
        if status == "down":
            subprocess.run(["pg_ctlcluster", version, name, "start"], capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of a PostgreSQL server that lets the tests create databases (started when down)."""
    why = _postgres_answers()
    if why is not None:
        _start_postgres()
        why = _postgres_answers()
    if why is not None:
        pytest.skip(
            f"PostgreSQL at {POSTGRES} cannot be reached or started ({why}); set SLMOPS_TEST_POSTGRES"
        )
    return POSTGRES


@pytest.fixture
def postgres_db(postgres_server: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one test (dropped after it); yields its URL."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    name = f"slmops_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", "postgresql"])
def history_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A history database location on each engine: a SQLite file path, or a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "fleet.db")
    return request.getfixturevalue("postgres_db")
