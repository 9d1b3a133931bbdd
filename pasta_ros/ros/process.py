"""Run pasta_node as a child process, safely: loopback-only discovery, an own domain id,
bounded waits, and always ended (SIGTERM, then SIGKILL) — for the demo, the benchmark and
the tests.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

from pasta_ros.core.errors import PastaError

DOMAIN_RANGE = range(1, 101)


class DomainLease:
    """A ROS_DOMAIN_ID in 1..100 that no other process using this class holds: the first free
    id from a pid-derived start, kept with an advisory lock file until :meth:`release`."""

    def __init__(self) -> None:
        lock_dir = Path(tempfile.gettempdir()) / "pasta_ros_domains"
        lock_dir.mkdir(exist_ok=True)
        start = (os.getpid() * 7) % len(DOMAIN_RANGE)
        for k in range(len(DOMAIN_RANGE)):
            domain = DOMAIN_RANGE[(start + k) % len(DOMAIN_RANGE)]
            fh = open(lock_dir / f"{domain}.lock", "w")  # noqa: SIM115 - held until release
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                continue
            self.domain_id, self._fh = domain, fh
            return
        raise PastaError("no free ROS_DOMAIN_ID in 1..100 on this machine")

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def ros_env(domain_id: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a process that starts ROS nodes: discovery on loopback only."""
    env = dict(os.environ if base is None else base)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated; LOCALHOST discovery range replaces it
    return env


SHM_DIR = Path("/dev/shm")
SHM_PREFIXES = ("fastrtps_", "fastdds_")  # segments and their lock files; not semaphores


def _shm_in_use() -> set[str]:
    """Paths under /dev/shm that a live process has open or mapped (readable /proc only)."""
    used: set[str] = set()
    shm = str(SHM_DIR)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:  # ended meanwhile, or not ours to read
            fds = []
        for fd in fds:
            try:  # each fd on its own: one closing meanwhile must not hide the others
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith(shm):
                used.add(target.removesuffix(" (deleted)"))
        try:
            maps = (proc / "maps").read_text().splitlines()
        except OSError:
            continue
        used.update(line[line.index(shm):].removesuffix(" (deleted)")
                    for line in maps if shm in line)
    return used


def clean_stale_shm() -> list[Path]:
    """Remove Fast DDS shared-memory files in /dev/shm that no live process holds: what a
    killed (kill -9) ROS process leaves, and what makes the next run lose every frame on the
    default transports. Only this user's files are touched. Returns what was removed."""
    if not SHM_DIR.is_dir():
        return []
    used, uid, removed = _shm_in_use(), os.getuid(), []
    for path in SHM_DIR.iterdir():
        try:
            if not path.name.startswith(SHM_PREFIXES) or str(path) in used or \
                    path.stat().st_uid != uid:
                continue
            path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


def use_ros_env(domain_id: int) -> None:
    """Apply :func:`ros_env` to this process (before its first rclpy.init)."""
    os.environ.update(ros_env(domain_id))
    os.environ.pop("ROS_LOCALHOST_ONLY", None)


class NodeProcess:
    """``python -m pasta_ros.ros.node --ros-args ...`` in a child process (own session);
    ``module="pasta_ros.ros.lifecycle_node"`` for the managed node."""

    def __init__(self, ros_args: list[str], env: dict[str, str], log_path: str | Path, *,
                 module: str = "pasta_ros.ros.node") -> None:
        self.cmd = [sys.executable, "-m", module, "--ros-args", *ros_args]
        self.env = env
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None
        self._log: IO | None = None

    def start(self) -> NodeProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_exit(self, timeout: float) -> int | None:
        """The exit status, or None if still running after ``timeout`` s."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def wait_ready(self, client, service: str = "pasta/recalibrate",
                   timeout: float = 60.0, srv_type=None) -> None:
        """Wait until the node serves ``service`` of ``srv_type`` (default the Recalibrate
        service, which it creates last). Raises PastaError with the node's log when it exits
        or the time runs out."""
        if srv_type is None:
            from pasta_msgs.srv import Recalibrate as srv_type

        cli = client.node.create_client(srv_type, service)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise PastaError(f"pasta_node exited with status {self.proc.returncode}:\n"
                                     f"{self.log_tail()}")
                if cli.wait_for_service(timeout_sec=0.5):
                    return
            raise PastaError(f"pasta_node not ready after {timeout:.0f} s:\n{self.log_tail()}")
        finally:
            client.node.destroy_client(cli)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, then SIGKILL (by pid); returns the exit status."""
        if self.proc is None:
            return None
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10.0)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
        return self.proc.returncode
