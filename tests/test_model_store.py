"""The model store: lineages, atomic saves, the latest pointer, roll-back, stale leftovers,
and which model a node starts with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pasta_ros.core.errors import ModelError
from pasta_ros.core.model_io import load_model
from pasta_ros.core.model_store import ModelStore, check_name, lineage_name, resolve_model


def _child(store: ModelStore, parent: Path, created: str, tag: str):
    """A copy of the model in ``parent`` as a new model of ``store``'s lineage: new id and
    creation time, the parent's id recorded."""
    model = load_model(parent)
    parent_id = model.model_id
    model.model_id, model.created = f"{parent_id[:20]}-{tag}", created
    model.stats = dict(model.stats) | {"parent_model_id": parent_id, "lineage": store.lineage}
    return model


@pytest.fixture()
def store(tmp_path) -> ModelStore:
    return ModelStore(tmp_path / "models", "line_a.pasta_node")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lineage_names():
    assert lineage_name("/line_a/pasta_node") == "line_a.pasta_node"
    assert lineage_name("/pasta_node") == "pasta_node"
    for bad in ("", "..", "a/b", ".hidden", "-x", "a b"):
        with pytest.raises(ModelError, match="not a valid name"):
            check_name("lineage", bad)


def test_a_save_is_complete_or_absent_and_lands_in_its_lineage(store, tiny_model):
    model = _child(store, tiny_model, "2999-01-01T00:00:00+00:00", "a")
    path = store.save(model)
    assert path == store.folder / model.model_id
    assert load_model(path).model_id == model.model_id
    assert not [p for p in store.folder.iterdir() if p.name.startswith(".")]  # no temporaries
    assert store.save(model) == path  # the same id again: kept, not rewritten
    assert store.latest() is None  # saving commits nothing


def test_latest_use_and_rollback(store, tiny_model):
    first = store.save(_child(store, tiny_model, "2999-01-01T00:00:00+00:00", "a"))
    second = store.save(_child(store, first, "2999-01-02T00:00:00+00:00", "b"))
    store.set_latest(second.name)
    assert store.latest() == second
    listed = store.models()
    assert [m.model_id for m in listed] == [first.name, second.name]  # oldest first
    assert [m.is_latest for m in listed] == [False, True]
    assert listed[1].parent == first.name
    assert store.rollback() == first and store.latest() == first
    with pytest.raises(ModelError, match="first of its line"):
        store.rollback()
    with pytest.raises(ModelError, match="no model 'nope'.*its models: "):
        store.set_latest("nope")
    assert store.latest() == first  # a refused change leaves the pointer


def test_a_node_starts_with_model_dir_unless_it_follows_latest(store, tiny_model):
    newer = store.save(_child(store, tiny_model, "2999-01-01T00:00:00+00:00", "a"))
    store.set_latest(newer.name)
    path, why = resolve_model(str(tiny_model), store, follow_latest=False)
    assert path == Path(tiny_model) and "follow_latest" in why and newer.name in why
    assert resolve_model(str(tiny_model), store, follow_latest=True)[0] == newer
    assert resolve_model("", store, follow_latest=False)[0] == newer
    (newer / "arrays.npz").write_bytes(b"broken")  # the latest no longer loads
    assert resolve_model(str(tiny_model), store, follow_latest=True)[0] == Path(tiny_model)
    with pytest.raises(ModelError, match="no usable model"):
        resolve_model("", store, follow_latest=True)


def test_two_lineages_never_see_each_others_models(tmp_path, tiny_model):
    a = ModelStore(tmp_path / "models", "line_a")
    b = ModelStore(tmp_path / "models", "line_b")
    newer = a.save(_child(a, tiny_model, "2999-01-01T00:00:00+00:00", "a"))
    a.set_latest(newer.name)
    assert resolve_model(str(tiny_model), b, follow_latest=True)[0] == Path(tiny_model)
    assert b.models() == [] and b.latest() is None
    with pytest.raises(ModelError, match="no usable model"):
        resolve_model("", b, follow_latest=True)


def test_what_a_killed_writer_left_is_cleaned_and_a_live_ones_is_kept(store, tiny_model):
    model_dir = store.save(_child(store, tiny_model, "2999-01-01T00:00:00+00:00", "a"))
    dead, live = _dead_pid(), os.getppid()
    leftovers = [store.folder / f".tmp-m1-{dead}", store.folder / f".latest.{dead}.tmp",
                 store.cache_dir / f"pasta_features_{dead}_x1.f16"]
    kept = [store.folder / f".tmp-m2-{live}", store.cache_dir / f"pasta_features_{live}_x.f16"]
    store.cache_dir.mkdir()
    for path in leftovers + kept:
        if path.name.startswith(".tmp-"):
            path.mkdir()
            (path / "arrays.npz").write_bytes(b"half")
        else:
            path.write_bytes(b"half")
    assert sorted(store.clean_stale()) == sorted(leftovers)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in leftovers)
    assert model_dir.is_dir()  # complete models are never touched
    assert json.loads((model_dir / "manifest.json").read_text())["model_id"] == model_dir.name


def test_the_models_command_lists_shows_uses_and_rolls_back(tmp_path, tiny_model, capsys):
    from pasta_ros.cli import main

    root = tmp_path / "models"
    store = ModelStore(root, "line_a")

    def run(*argv) -> tuple[int, dict]:
        code = main(["-q", "models", *argv])
        out, err = capsys.readouterr()
        return code, (json.loads(out) if code == 0 else {"error": err})

    code, used = run("use", str(tiny_model), "--root", str(root), "--lineage", "line_a")
    assert code == 0 and store.latest_id() == used["latest"] == load_model(tiny_model).model_id
    child = store.save(_child(store, store.latest(), "2999-01-01T00:00:00+00:00", "b"))
    assert run("use", child.name, "--root", str(root), "--lineage", "line_a")[0] == 0
    code, listed = run("list", "--root", str(root))
    assert code == 0 and list(listed["lineages"]) == ["line_a"]
    assert [m["latest"] for m in listed["lineages"]["line_a"]] == [False, True]
    code, shown = run("show", child.name, "--root", str(root), "--lineage", "line_a")
    assert code == 0 and shown["parent_model_id"] == used["latest"]
    assert run("rollback", "--root", str(root), "--lineage", "line_a")[1]["latest"] == \
        used["latest"]
    code, failed = run("rollback", "--root", str(root), "--lineage", "line_a")
    assert code == 2 and "first of its line" in failed["error"]
    code, failed = run("use", "nope", "--root", str(root), "--lineage", "line_a")
    assert code == 2 and "no model 'nope'" in failed["error"]
    code, failed = run("use", "x")
    assert code == 2 and "give --root and --lineage" in failed["error"]
    assert store.latest_id() == used["latest"]  # the refused calls changed nothing
