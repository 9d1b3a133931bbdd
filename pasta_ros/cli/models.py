"""`pasta models list | show | use | rollback`: the model store of the nodes (no ROS needed,
except ``use``/``rollback`` with ``--node``, which switch a running node through its
``pasta/select_model`` service).

Store layout: ``<root>/<lineage>/<model id>/`` and ``<root>/<lineage>/latest``
(:mod:`pasta_ros.core.model_store`). ``use``/``rollback`` without ``--node`` only move the
lineage's ``latest`` pointer: a node picks it up at its next start when ``follow_latest`` is
true (or its ``model_dir`` is '').
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pasta_ros.core.errors import ModelError
from pasta_ros.core.model_io import load_model
from pasta_ros.core.model_store import ModelStore


def register(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("models", help="list, show, use or roll back models of the model store")
    verbs = m.add_subparsers(dest="verb", required=True)

    ls = verbs.add_parser("list", help="every lineage's models, oldest first, latest marked")
    _store_args(ls, lineage_required=False)
    ls.set_defaults(func=cmd_list)

    show = verbs.add_parser("show", help="one model's manifest summary")
    show.add_argument("model", help="a model folder, or a model id with --root/--lineage")
    _store_args(show, lineage_required=False, root_required=False)
    show.set_defaults(func=cmd_show)

    use = verbs.add_parser("use", help="make a model the lineage's latest (a folder outside "
                                       "the store is copied in first)")
    use.add_argument("model", help="a model id of the lineage, or a model folder")
    _store_args(use, lineage_required=False, root_required=False)
    _node_arg(use)
    use.set_defaults(func=cmd_use)

    back = verbs.add_parser("rollback", help="point latest at the parent of its model (with "
                                             "--node: the parent of the running model)")
    _store_args(back, lineage_required=False, root_required=False)
    _node_arg(back)
    back.set_defaults(func=cmd_rollback)


def _store_args(p: argparse.ArgumentParser, *, lineage_required: bool = True,
                root_required: bool = True) -> None:
    p.add_argument("--root", type=Path, required=root_required,
                   help="the store folder (the node's models_root)")
    p.add_argument("--lineage", required=lineage_required,
                   help="the line's lineage (the node's lineage parameter; default there: "
                        "its name with '/' as '.', e.g. line_a.pasta_node)")


def _node_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node", default="", help="switch this running node now (its "
                                              "pasta/select_model service, e.g. "
                                              "/line_a/pasta_node; the store is then "
                                              "the node's)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for it")


def _store(args: argparse.Namespace) -> ModelStore:
    if args.root is None or not args.lineage:
        raise ModelError("give --root and --lineage (the store), or --node (a running node)")
    return ModelStore(args.root, args.lineage)


def _lineages(root: Path, lineage: str | None) -> list[ModelStore]:
    if lineage:
        return [ModelStore(root, lineage)]
    if not root.is_dir():
        raise ModelError(f"model store {root} does not exist")
    return [ModelStore(root, p.name) for p in sorted(root.iterdir())
            if p.is_dir() and not p.name.startswith(".")]


def cmd_list(args: argparse.Namespace) -> dict:
    out = {}
    for store in _lineages(args.root, args.lineage):
        out[store.lineage] = [{"model_id": m.model_id, "created": m.created,
                               "parent": m.parent, "latest": m.is_latest, "path": str(m.path)}
                              for m in store.models()]
    return {"root": str(args.root), "lineages": out}


def cmd_show(args: argparse.Namespace) -> dict:
    path = Path(args.model)
    if not path.is_dir():
        if args.root is None or not args.lineage:
            raise ModelError(f"{args.model} is not a model folder; for a model id give --root "
                             "and --lineage")
        path = ModelStore(args.root, args.lineage).find(args.model)
    m = load_model(path)
    return {"model_id": m.model_id, "path": str(path), "created": m.created,
            "backbone": m.backbone, "input_size": list(m.input_size), "clusters": m.k,
            "anomaly_clusters": int(m.anomaly.sum()),
            "background_clusters": int(m.background.sum()),
            "ratio_threshold": m.ratio_threshold, "vote_threshold": m.vote_threshold,
            "parent_model_id": m.stats.get("parent_model_id", ""),
            "lineage": m.stats.get("lineage", ""),
            "images": {k: m.stats.get(f"{k}_images") for k in ("baseline", "reference",
                                                               "empty")}}


def _switch_node(args: argparse.Namespace, **fields) -> dict:
    from pasta_msgs.srv import SelectModel
    from pasta_ros.ros.clients import call_once

    res = call_once(SelectModel, f"{args.node.rstrip('/')}/pasta/select_model",
                    SelectModel.Request(**fields), args.timeout)
    return {"node": args.node, "model_id": res.model_id, "model_dir": res.model_dir,
            "message": res.message}


def cmd_use(args: argparse.Namespace) -> dict:
    if args.node:  # the node validates, copies in, writes latest and swaps
        is_dir = Path(args.model).is_dir()
        return _switch_node(args, model_id="" if is_dir else args.model,
                            model_dir=str(Path(args.model).resolve()) if is_dir else "")
    store = _store(args)
    folder = store.save(load_model(args.model)) if Path(args.model).is_dir() \
        else store.find(args.model)
    store.set_latest(folder.name)
    return {"lineage": store.lineage, "latest": folder.name, "path": str(folder)}


def cmd_rollback(args: argparse.Namespace) -> dict:
    if args.node:
        return _switch_node(args, rollback=True)
    store = _store(args)
    folder = store.rollback()
    return {"lineage": store.lineage, "latest": folder.name, "path": str(folder)}
