"""The peak-memory figure of `pasta bench memory`: the child's own peak, not its parent's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pasta_ros.bench.machine import peak_rss_mb


def test_peak_rss_reads_vmhwm_in_mb(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmPeak:\t 9000000 kB\nVmHWM:\t  1536000 kB\n"
                      "VmRSS:\t  1024000 kB\n")
    assert peak_rss_mb(status) == 1500.0


def test_peak_rss_falls_back_where_there_is_no_proc(tmp_path: Path) -> None:
    assert peak_rss_mb(tmp_path / "absent") > 0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux /proc only")
def test_a_child_does_not_report_its_large_parents_peak() -> None:
    held = np.ones(800 * 2**20 // 8)  # the parent touches 800 MB and keeps it while the child runs
    code = "from pasta_ros.bench.machine import peak_rss_mb; print(peak_rss_mb())"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, timeout=120)
    child = float(out.stdout.strip().splitlines()[-1])
    assert held.sum() > 0 and peak_rss_mb() > 800
    # the child imports torch (a few hundred MB) but never holds the parent's 800 MB
    assert child < peak_rss_mb() - 400, (child, peak_rss_mb())
