"""Point the ROS 2 wheels' exported CMake files at this venv's Python and numpy include folders.

  VENV/bin/python scripts/fix_wheel_cmake.py VENV

The wheels' ``share/**/*.cmake`` files name the wheel builder's folders
(``/opt/python/cp311-cp311/include/python3.11`` and its numpy include); without this rewrite a
cmake build against them stops at "Imported target std_msgs::std_msgs__rosidl_generator_py
includes non-existent path". Idempotent: only the builder's strings are replaced. Used by
scripts/build_msgs.sh and scripts/colcon_build.sh; run it with the venv's own Python.
"""

from __future__ import annotations

import pathlib
import re
import sys
import sysconfig

import numpy

PAT_NP = re.compile(r"/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages"
                    r"/numpy/_core/include")
PAT_PY = re.compile(r"/opt/python/cp3\d+-cp3\d+/include/python3\.\d+")


def fix(venv: pathlib.Path) -> int:
    """Rewrite the builder's include paths in ``venv/share/**/*.cmake``; the files changed."""
    py_inc, np_inc = sysconfig.get_paths()["include"], numpy.get_include()
    fixed = 0
    for f in (venv / "share").rglob("*.cmake"):
        text = f.read_text(encoding="utf-8", errors="surrogateescape")
        if "/opt/python/" not in text:
            continue
        new = PAT_PY.sub(py_inc, PAT_NP.sub(np_inc, text))
        if new != text:
            f.write_text(new, encoding="utf-8", errors="surrogateescape")
            fixed += 1
    print(f"cmake path fix: {fixed} file(s) rewritten (python {py_inc}, numpy {np_inc})")
    return fixed


if __name__ == "__main__":
    fix(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else sys.prefix))
