"""The on-disk model store: one folder per lineage, one folder per model, a ``latest`` pointer.

Layout under ``root`` (the ``models_root`` parameter / ``--root`` option)::

    root/<lineage>/<model id>/      manifest.json, arrays.npz (+ engines/)
    root/<lineage>/latest           one line: the model id in force for that lineage
    root/<lineage>/.tmp-<id>-<pid>  a model being written (renamed when complete)

A lineage is one line's (one node's) history: its first model and every recalibration or
selection made from it. A node only ever loads models of its own lineage, so two nodes that
share ``root`` never pick up each other's models. Model folders are written under a temporary
name, fsync'd and renamed in one step, and ``latest`` is replaced atomically, so a crash at
any point leaves either the old or the new state, never half of one; temporaries a crashed
writer left are removed by :meth:`ModelStore.clean_stale`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from pasta_ros.core.clustering import CACHE_PREFIX
from pasta_ros.core.errors import ModelError
from pasta_ros.core.model_io import CalibratedModel, load_model, save_model

log = logging.getLogger(__name__)
LATEST = "latest"
TMP_PREFIX = ".tmp-"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CACHE = ".cache"
_TEMP = re.compile(r"^(\.tmp-.+-(\d+)|\.latest\.(\d+)\.tmp|"
                   + CACHE_PREFIX + r"(\d+)_.*\.f16)$")


def lineage_name(fully_qualified_node_name: str) -> str:
    """The default lineage of a node: its fully qualified name with '/' as '.'
    (``/line_a/pasta_node`` -> ``line_a.pasta_node``)."""
    return ".".join(p for p in fully_qualified_node_name.split("/") if p) or "pasta_node"


def check_name(what: str, name: str) -> str:
    """``name`` when it is a safe single folder name, else ModelError naming the rule."""
    if not _NAME.match(name) or name in (".", ".."):
        raise ModelError(f"{what} {name!r} is not a valid name: use letters, digits, '.', '_' "
                         "and '-' (at most 128, not starting with '.' or '-')")
    return name


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """fsync every file under ``folder`` and the folders themselves (durable before rename)."""
    for path in sorted(folder.rglob("*"), reverse=True) + [folder]:
        _fsync(path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class StoredModel:
    """One model folder of a lineage, as listed by :meth:`ModelStore.models`."""

    model_id: str
    path: Path
    created: str
    parent: str
    is_latest: bool


class ModelStore:
    """The models of one lineage under ``root``. Creates nothing until a model is saved."""

    def __init__(self, root: str | Path, lineage: str) -> None:
        self.root = Path(root).expanduser()
        self.lineage = check_name("lineage", lineage)
        self.folder = self.root / self.lineage

    # ------------------------------------------------------------------ reading
    def latest_id(self) -> str | None:
        """The model id ``latest`` names, or None (no pointer, or a malformed one: warned)."""
        pointer = self.folder / LATEST
        if not pointer.is_file():
            return None
        name = pointer.read_text(encoding="utf-8").strip()
        if not _NAME.match(name):
            log.warning("ignoring %s: it does not name a model folder", pointer)
            return None
        return name

    def latest(self) -> Path | None:
        """The folder ``latest`` names (it may be missing or broken: load it to know)."""
        name = self.latest_id()
        return None if name is None else self.folder / name

    def models(self) -> list[StoredModel]:
        """Every loadable model of the lineage, oldest first (broken folders are skipped with a
        warning)."""
        if not self.folder.is_dir():
            return []
        latest = self.latest_id()
        out = []
        for path in sorted(p for p in self.folder.iterdir()
                           if p.is_dir() and not p.name.startswith(".")):
            try:
                m = load_model(path)
            except ModelError as exc:
                log.warning("skipping %s: %s", path, exc)
                continue
            out.append(StoredModel(m.model_id, path, m.created,
                                   str(m.stats.get("parent_model_id", "")),
                                   path.name == latest))
        return sorted(out, key=lambda s: (s.created, s.model_id))

    def find(self, model_id: str) -> Path:
        """The folder of ``model_id`` in this lineage (loaded and checked).

        Raises:
            ModelError: no such model, or it does not load; the message lists what exists.
        """
        path = self.folder / check_name("model id", model_id)
        if not path.is_dir():
            have = ", ".join(s.model_id for s in self.models()) or "none"
            raise ModelError(f"no model {model_id!r} in lineage {self.lineage} under "
                             f"{self.root}; its models: {have}")
        load_model(path)
        return path

    # ------------------------------------------------------------------ writing
    def save(self, model: CalibratedModel) -> Path:
        """Write ``model`` as ``<lineage>/<model id>``: under a temporary name, fsync'd, then
        renamed. Returns the final folder (an existing folder of the same id is kept)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if not model.model_id:
            model.finalize()
        final = self.folder / check_name("model id", model.model_id)
        if final.is_dir():
            return final
        tmp = self.folder / f"{TMP_PREFIX}{model.model_id}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            save_model(model, tmp)
            _fsync_tree(tmp)
            os.rename(tmp, final)
            _fsync(self.folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def set_latest(self, model_id: str) -> Path:
        """Point ``latest`` at ``model_id`` (which must load) atomically and durably."""
        path = self.find(model_id)
        tmp = self.folder / f".{LATEST}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(model_id + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.folder / LATEST)
        _fsync(self.folder)
        return path

    def rollback(self) -> Path:
        """Point ``latest`` at the parent of the model it names now.

        Raises:
            ModelError: no ``latest``, or its model has no parent in this lineage.
        """
        current = self.latest_id()
        if current is None:
            raise ModelError(f"lineage {self.lineage} under {self.root} has no latest model "
                             "to roll back from")
        parent = str(load_model(self.folder / current).stats.get("parent_model_id") or "")
        if not parent or not (self.folder / parent).is_dir():
            raise ModelError(f"model {current} has no parent model in lineage {self.lineage} "
                             "(it is the first of its line); choose one with `pasta models "
                             "use`")
        return self.set_latest(parent)

    @property
    def cache_dir(self) -> Path:
        """Default folder of a recalibration's feature cache: ``<lineage>/.cache``."""
        return self.folder / CACHE

    def clean_stale(self, cache_dir: Path | None = None) -> list[Path]:
        """Remove what a killed writer left: model and pointer temporaries
        (``.tmp-<id>-<pid>``, ``.latest.<pid>.tmp``) and feature-cache files in ``cache_dir``
        (default :attr:`cache_dir`) whose process is gone. Returns what was removed."""
        removed = []
        for path in self._temporaries(cache_dir or self.cache_dir):
            match = _TEMP.match(path.name)
            pid = int(next(g for g in match.groups()[1:] if g))
            if pid != os.getpid() and _pid_alive(pid):
                continue  # another live writer's
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
        return removed

    def _temporaries(self, cache_dir: Path) -> list[Path]:
        return [p for folder in (self.folder, cache_dir) if folder.is_dir()
                for p in folder.iterdir() if _TEMP.match(p.name)]


def resolve_model(model_dir: str, store: ModelStore, follow_latest: bool) -> tuple[Path, str]:
    """The model a node starts with, and why.

    - ``model_dir`` given and ``follow_latest`` false: ``model_dir`` (a newer model of the
      lineage is mentioned in ``why``, so the log says how to get it);
    - otherwise the lineage's ``latest`` when it loads, else ``model_dir``.

    Raises:
        ModelError: nothing loads; the message says why for each candidate.
    """
    latest = store.latest()
    if model_dir and not follow_latest:
        load_model(model_dir)
        why = "model_dir"
        if latest is not None and latest.is_dir() and latest.resolve() != \
                Path(model_dir).expanduser().resolve():
            why += (f"; lineage {store.lineage} has a newer selection {latest.name} (set "
                    "follow_latest:=true or model_dir:='' to start with it)")
        return Path(model_dir).expanduser(), why
    problems = []
    if latest is not None:
        try:
            load_model(latest)
            return latest, f"latest of lineage {store.lineage}"
        except ModelError as exc:
            problems.append(f"{store.folder / LATEST}: {exc}")
            log.warning("the lineage's latest model cannot be loaded (%s); falling back", exc)
    else:
        problems.append(f"{store.folder / LATEST} does not exist")
    if model_dir:
        load_model(model_dir)
        return Path(model_dir).expanduser(), "model_dir (the lineage has no usable latest)"
    raise ModelError("no usable model: model_dir is '' and " + "; ".join(problems))
