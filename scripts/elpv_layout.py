"""Write the ELPV few-shot protocol layout (monocrystalline cells) outside the repository.

The ELPV images are under a non-commercial licence: evaluation only. Install the package into
a separate virtual environment, never into the project's, and never commit what this writes::

    python3.11 -m venv /work/evalenv && /work/evalenv/bin/pip install elpv-dataset
    LABELS=$(/work/evalenv/bin/python -c "import elpv_dataset, os; \
        print(os.path.join(os.path.dirname(elpv_dataset.__file__), 'data', 'labels.csv'))")
    python scripts/elpv_layout.py --labels "$LABELS" --out /work/elpv_data/mono --seed 0

Protocol (pasta_ros/data/labels_layout.py): type ``mono`` only; normal = defect probability 0,
anomalous = 1; normals 75/25 by ``--seed`` (75% = the shot pool, ``reference/``); test = the 25%
normals + all anomalous, split by the same seed into ``dev/`` (tune) and ``heldout/`` (report).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from pasta_ros.core.errors import PastaError
from pasta_ros.data.labels_layout import read_elpv_labels, split_few_shot, write_few_shot_layout


def _default_labels() -> Path | None:
    spec = importlib.util.find_spec("elpv_dataset")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "data" / "labels.csv"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labels", type=Path, default=None,
                   help="the elpv_dataset package's data/labels.csv (default: found when the "
                        "running Python has the package)")
    p.add_argument("--out", type=Path, required=True, help="output folder (outside the repo)")
    p.add_argument("--type", default="mono", help="cell type: mono | poly")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    labels = args.labels or _default_labels()
    try:
        if labels is None:
            raise PastaError("elpv_dataset is not installed in this Python: pass --labels")
        split = split_few_shot(read_elpv_labels(labels, args.type), seed=args.seed)
        print(json.dumps(write_few_shot_layout(split, args.out, args.seed)))
    except (PastaError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
