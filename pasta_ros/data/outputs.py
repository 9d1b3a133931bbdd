"""Output folders that are written whole or not at all (``pasta calibrate --out``,
``pasta segment --out``).

:func:`fresh_output` refuses a folder that already holds files unless ``overwrite``; the work
is written into a temporary sibling (``.<name>.tmp-<pid>``) that replaces the folder in one
rename when the work succeeded. A failure, an interrupt or a crash leaves the old folder as it
was (a crash leaves the temporary, which the next run with the same ``--out`` removes).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pasta_ros.core.errors import PastaError


class OutputExists(PastaError):
    """The output folder already holds results and ``--overwrite`` was not given."""


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def fresh_output(out: str | Path, *, overwrite: bool, what: str) -> Iterator[Path]:
    """Yield an empty temporary folder to write ``out``'s contents into; on success it
    becomes ``out`` (the old contents removed), on any exception ``out`` is untouched.

    Raises:
        OutputExists: ``out`` is a file, or a folder that is not empty, and not ``overwrite``;
            the message names ``what`` it holds and the fix.
    """
    out = Path(out)
    occupied = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if occupied and not overwrite:
        raise OutputExists(f"{out} already exists and is not empty (it would be replaced by "
                           f"{what}); pass --overwrite to replace it, or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # a crashed earlier run's
        _remove(stale)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists() or out.is_symlink():
        os.rename(out, old)
    os.rename(tmp, out)
    _remove(old)
