"""What every benchmark result records about the machine it ran on (a leaf module)."""

from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path

import torch


def machine() -> dict:
    """CPU, core and thread counts, Python and torch versions, and today's date."""
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}


def peak_rss_mb(status: Path = Path("/proc/self/status")) -> float:
    """This process's peak resident set in MB: ``VmHWM`` of ``status`` on Linux.

    ``ru_maxrss`` is not used where ``VmHWM`` exists: Linux carries the *parent's* peak into
    a child's ``ru_maxrss`` across ``vfork`` + ``exec`` (how ``subprocess`` starts children),
    so a small calibration child of a large benchmark process reported the parent's size.
    ``VmHWM`` belongs to the child's own address space, which ``exec`` made new.
    """
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:  # not Linux: the best figure the platform has
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
