"""The README's commands may run one after the other in one shell: no process that setup leaves running (dockerd,
containerd) may keep its lock, or the next setup would wait for it for ever."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

LOCK = Path(os.environ.get("TMPDIR", "/tmp")) / "multiuser-spawner-setup.lock"


def holders_of(path: Path) -> list[str]:
    """The processes with ``path`` open, as "pid (command)"."""
    found = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            targets = [os.readlink(fd) for fd in fd_dir.iterdir()]
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if str(path) in targets:
            pid = fd_dir.parent.name
            found.append(f"{pid} ({(fd_dir.parent / 'comm').read_text().strip()})")
    return found


@pytest.mark.docker
def test_no_process_left_running_by_setup_keeps_its_lock(docker_client):
    # docker_client: the engine that setup started is running, so its processes are the ones to look at
    assert LOCK.exists(), "scripts/setup has not run on this machine"
    assert holders_of(LOCK) == []
    # and the lock can be taken at once, as the next setup will
    assert subprocess.run(["flock", "--nonblock", str(LOCK), "true"], timeout=10).returncode == 0
