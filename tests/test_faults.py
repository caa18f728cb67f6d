"""Faults survived, each on the real stack: broken servers and names, out-of-memory, a killed database, start/stop
races, user deletion, and a restart of the Docker engine itself."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import docker
import pytest

from hubstack import exec_in, notebook, spawn_failure_message

pytestmark = pytest.mark.docker

CONFIG = """
c.Spawner.poll_interval = 2
c.MultiUserSpawner.group_overrides = {
    "1-db": {"groups": ["db"], "spawner_override": {"database_enabled": True}},
    "2-crash": {"groups": ["crash"], "spawner_override": {
        "cmd": ["sh", "-c", "echo 'fatal: cannot read course config' >&2; exit 3"]}},
    "3-small": {"groups": ["small"], "spawner_override": {"mem_limit": "200M"}},
    "4-nonet": {"groups": ["nonet"], "spawner_override": {
        "network_name": "no-such-network", "private_network": False}},
}
"""
USERS = {"ada": ["db"], "crash": ["crash"], "tiny": ["small"], "nonet": ["nonet"], "squat": [], "racer": ["db"]}


@pytest.fixture(scope="module")
def hub(make_hub, docker_client):
    return make_hub(USERS, CONFIG)


def leftovers(docker_client, hub, user):
    prefix = f"{hub.prefix}-{user}"
    containers = [c.name for c in docker_client.containers.list(all=True) if c.name.startswith(prefix)]
    networks = [n.name for n in docker_client.networks.list() if n.name.startswith(prefix)]
    return containers + networks


def wait_until(condition, timeout=60, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_server_that_dies_while_starting_shows_its_last_words(hub, docker_client):
    message = spawn_failure_message(hub, "crash")
    assert f"the server in container {hub.prefix}-crash stopped while starting (exit code 3)" in message
    assert "fatal: cannot read course config" in message
    assert leftovers(docker_client, hub, "crash") == []


def test_name_taken_by_a_foreign_container(hub, docker_client):
    squatter = docker_client.containers.run(
        "multiuser-spawner/singleuser:latest", ["sleep", "300"], name=f"{hub.prefix}-squat", detach=True
    )
    try:
        message = spawn_failure_message(hub, "squat")
        assert (
            f"the container name {hub.prefix}-squat is taken by a container multiuser-spawner did not create" in message
        )
        squatter.reload()
        assert squatter.status == "running"  # left alone
    finally:
        squatter.remove(force=True)


def test_database_name_taken_by_a_foreign_container(hub, docker_client):
    squatter = docker_client.containers.run(
        "multiuser-spawner/singleuser:latest", ["sleep", "300"], name=f"{hub.prefix}-ada_db", detach=True
    )
    try:
        message = spawn_failure_message(hub, "ada")
        assert f"the container name {hub.prefix}-ada_db is taken" in message
        squatter.reload()
        assert squatter.status == "running"  # neither reused nor removed by the undo
        assert [c.name for c in docker_client.containers.list(all=True) if c.name.startswith(f"{hub.prefix}-ada")] == [
            f"{hub.prefix}-ada_db"
        ]
    finally:
        squatter.remove(force=True)


def test_missing_network_names_it(hub, docker_client):
    message = spawn_failure_message(hub, "nonet")
    assert "no-such-network" in message
    assert leftovers(docker_client, hub, "nonet") == []


def test_out_of_memory_server_is_reported_stopped(hub, docker_client):
    hub.start_server("tiny")
    container = notebook(docker_client, hub, "tiny")
    # make the server itself the OOM killer's first choice (raising one's own score needs no privilege; the
    # pattern does not match this shell's own command line, whose children would inherit the score), then
    # push the container past its 200M limit
    code, out = exec_in(
        container,
        'for p in /proc/[0-9]*; do grep -q "jupyterhub-single[u]ser" $p/cmdline 2>/dev/null'
        " && echo 1000 > $p/oom_score_adj; done; python3 -c 'x = bytearray(150 * 2**20); y = bytearray(150 * 2**20)'",
    )
    wait_until(lambda: hub.user("tiny")["servers"] == {}, what="the hub to see the server stop")
    log = hub.log_path.read_text()
    assert f"Container {hub.prefix}-tiny was killed by its memory limit" in log
    assert "tiny server stopped with exit code: 137" in log or "exit code: 137" in log
    # and the user can simply start again
    hub.start_server("tiny")
    assert hub.server_api("tiny", "api/status").status_code == 200
    hub.stop_server("tiny")


def test_database_killed_from_inside_comes_back_with_its_rows(hub, docker_client):
    hub.start_server("ada")
    nb = notebook(docker_client, hub, "ada")
    code, out = exec_in(
        nb, "psql -v ON_ERROR_STOP=1 -c \"CREATE TABLE IF NOT EXISTS t (x text); INSERT INTO t VALUES ('row')\""
    )
    assert code == 0, out
    db = docker_client.containers.get(f"{hub.prefix}-ada_db")
    postmaster = next(p for p in db.top(ps_args="-eo pid,comm")["Processes"] if p[1] == "postgres")
    os.kill(int(postmaster[0]), signal.SIGKILL)

    def answers():
        return exec_in(nb, "PGCONNECT_TIMEOUT=2 psql -tA -c 'SELECT x FROM t'") == (0, "row\n")

    wait_until(answers, what="the database to come back")
    db.reload()
    assert db.attrs["RestartCount"] >= 1
    assert hub.server_api("ada", "api/status").status_code == 200  # the notebook never noticed


def test_start_and_stop_racing(hub, docker_client):
    for _ in range(3):
        starting = threading.Thread(target=hub.request, args=("POST", "/users/racer/server"), kwargs={"json": {}})
        starting.start()
        time.sleep(0.3)
        hub.request("DELETE", "/users/racer/server")
        starting.join()
        # whatever won, the hub and Docker agree once things settle
        wait_until(lambda: not (hub.user("racer")["servers"].get("") or {}).get("pending"), what="settling")
        if hub.user("racer")["servers"]:
            hub.wait_ready("racer")
            assert notebook(docker_client, hub, "racer").status == "running"
            hub.stop_server("racer")
        assert leftovers(docker_client, hub, "racer") == []
    hub.start_server("racer")
    assert exec_in(notebook(docker_client, hub, "racer"), "psql -tA -c 'SELECT 1'") == (0, "1\n")
    hub.stop_server("racer")


def test_deleting_a_user_keeps_their_volumes(hub, docker_client):
    hub.start_server("racer")
    hub.stop_server("racer")
    r = hub.request("DELETE", "/users/racer")
    assert r.status_code == 204, r.text
    assert leftovers(docker_client, hub, "racer") == []
    volumes = sorted(v.name for v in docker_client.volumes.list() if v.name.startswith(f"{hub.prefix}-racer"))
    assert volumes == [f"{hub.prefix}-racer_db", f"{hub.prefix}-racer_home"]


def test_deleting_a_user_removes_volumes_when_configured(make_hub, docker_client):
    hub = make_hub({"gone": []}, "c.MultiUserSpawner.remove_volumes_on_delete = True\n")
    hub.start_server("gone")
    r = hub.request("DELETE", "/users/gone")  # a running user: the hub stops the server first
    assert r.status_code == 204, r.text
    assert not [v.name for v in docker_client.volumes.list() if v.name.startswith(hub.prefix)]
    assert leftovers(docker_client, hub, "gone") == []


def _dockerd_pid() -> int:
    return int(subprocess.run(["pidof", "dockerd"], capture_output=True, text=True, check=True).stdout.split()[0])


def _restart_dockerd() -> None:
    pid = _dockerd_pid()
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read().split(b"\0")[:-1]
    cmdline[0] = os.readlink(f"/proc/{pid}/exe").encode()  # started by a bare name, perhaps: use the real path
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 90
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.2)
    with open("/var/log/dockerd.log", "ab") as log:
        subprocess.Popen(cmdline, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            docker.from_env().ping()
            return
        except Exception:
            time.sleep(0.5)
    raise AssertionError("dockerd did not come back")


def test_dockerd_restart_then_respawn_finds_files_and_rows(hub, docker_client):
    hub.start_server("ada")
    nb = notebook(docker_client, hub, "ada")
    assert exec_in(nb, "echo survives > $HOME/before-restart.txt")[0] == 0
    assert exec_in(nb, "psql -v ON_ERROR_STOP=1 -c \"CREATE TABLE d (x text); INSERT INTO d VALUES ('kept')\"")[0] == 0
    _restart_dockerd()
    # the engine stopped every container; the hub's poll notices and marks the server stopped
    wait_until(lambda: hub.user("ada")["servers"] == {}, timeout=60, what="the hub to see the server stop")
    hub.start_server("ada")
    nb = notebook(docker_client, hub, "ada")
    assert exec_in(nb, "cat $HOME/before-restart.txt") == (0, "survives\n")
    assert exec_in(nb, "psql -tA -c 'SELECT x FROM d'") == (0, "kept\n")
