"""The store: complete versions only, atomic `current`/`previous`, garbage collection, crash repair."""

from __future__ import annotations

import os
from pathlib import Path

from edge_agent.deploy.store import Store


def staged(store: Store, ref: str, sha: str = "ab" * 32) -> Path:
    d = store.staging_dir(ref, sha)
    (d / "cpu-int4").mkdir(parents=True)
    (d / "cpu-int4" / "model.onnx").write_bytes(ref.encode())
    return d


def install(store: Store, ref: str) -> None:
    store.install(staged(store, ref), ref, "cpu-int4", "ab" * 32)


def test_install_activate_and_previous(tmp_path: Path) -> None:
    store = Store(tmp_path)
    install(store, "m@1.0.0")
    store.activate("m@1.0.0")
    install(store, "m@2.0.0")
    store.activate("m@2.0.0")
    cur, prev = store.current(), store.previous()
    assert cur and prev and (cur.ref, prev.ref) == ("m@2.0.0", "m@1.0.0")
    assert (cur.variant_dir / "model.onnx").read_bytes() == b"m@2.0.0"
    assert os.readlink(store.current_link) == "store/m@2.0.0"  # relative: the state dir can move
    assert not list(store.staging_root.iterdir())
    store.restore("m@1.0.0")
    assert store.current().ref == "m@1.0.0"  # type: ignore[union-attr]


def test_install_is_idempotent_after_the_rename(tmp_path: Path) -> None:
    store = Store(tmp_path)
    d = staged(store, "m@1.0.0")
    first = store.install(d, "m@1.0.0", "cpu-int4", "ab" * 32)
    again = store.install(d, "m@1.0.0", "cpu-int4", "ab" * 32)  # a restart re-running the step
    assert first.path == again.path and store.is_installed("m@1.0.0", "ab" * 32)


def test_collect_keeps_current_previous_and_n(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for v in ("1", "2", "3", "4", "5"):
        install(store, f"m@{v}.0.0")
        store.activate(f"m@{v}.0.0")
    removed = store.collect(keep=2)
    assert sorted(removed) == ["m@1.0.0", "m@2.0.0"]
    assert [v.ref for v in store.versions()] == ["m@3.0.0", "m@4.0.0", "m@5.0.0"]


def test_recover_repairs_what_a_crash_leaves(tmp_path: Path) -> None:
    store = Store(tmp_path)
    install(store, "m@1.0.0")
    store.activate("m@1.0.0")
    (store.store_dir / "half@9.9.9").mkdir()  # no .installed.json: never complete
    os.symlink("store/gone@0.0.1", tmp_path / ".current.tmp")
    (store.trash_dir / "x").mkdir()
    notes = store.recover()
    assert not (store.store_dir / "half@9.9.9").exists() and not (tmp_path / ".current.tmp").is_symlink()
    assert not list(store.trash_dir.iterdir()) and store.current().ref == "m@1.0.0"  # type: ignore[union-attr]
    assert len(notes) == 2
    # a current link to a version that is not complete falls back to previous (here: none)
    os.replace(tmp_path / "current", tmp_path / "c")
    os.symlink("store/missing@1.0.0", tmp_path / "current")
    store.recover()
    assert store.current() is None and not store.current_link.is_symlink()
