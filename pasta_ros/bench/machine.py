"""What every benchmark result records about the machine it ran on (a leaf module)."""

from __future__ import annotations

import os
import platform
import time

import torch


def machine() -> dict:
    """CPU, core and thread counts, Python and torch versions, and today's date."""
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
