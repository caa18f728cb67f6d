"""Secure defaults, each checked on a running container, and the refusals that protect them."""

from __future__ import annotations

import pytest

from hubstack import exec_in, notebook, spawn_failure_message

pytestmark = pytest.mark.docker

CONFIG = """
c.MultiUserSpawner.group_overrides = {
    "1-few-pids": {"groups": ["few-pids"], "spawner_override": {"pids_limit": 48}},
    "2-root": {"groups": ["root"], "spawner_override": {"extra_create_kwargs": {"user": "root"}}},
    "3-root-allowed": {"groups": ["root-allowed"], "spawner_override": {
        "extra_create_kwargs": {"user": "root"}, "allow_root": True, "cap_drop": [], "args": ["--allow-root"]}},
    "4-db": {"groups": ["db"], "spawner_override": {"database_enabled": True}},
    "5-open": {"groups": ["open"], "spawner_override": {"private_network": False}},
}
# evaluated when the container is made: the root check must see what it returns
c.MultiUserSpawner.extra_create_kwargs = lambda spawner: {"user": "root"} if spawner.user.name == "sneaky" else {}
"""
USERS = {
    "plain": ["db"],
    "pids": ["few-pids"],
    "rooty": ["root"],
    "admin2": ["root-allowed"],
    "stu1": [],
    "stu2": [],
    "open1": ["open"],
    "open2": ["open"],
    "sneaky": [],
}


SERVE_HOME = "cd ~ && echo 'my homework' > answers.txt && (python3 -m http.server 8000 >/dev/null 2>&1 &) && sleep 1"
FETCH = 'python3 -c "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())"'


def notebook_ip(docker_client, hub, user: str) -> str:
    networks = notebook(docker_client, hub, user).attrs["NetworkSettings"]["Networks"]
    return next(iter(networks.values()))["IPAddress"]


def test_students_cannot_reach_each_others_notebooks(hub, docker_client):
    # tried as a student would: serve one's home directory, and ask for it from another student's notebook
    hub.start_server("stu1")
    hub.start_server("stu2")
    assert exec_in(notebook(docker_client, hub, "stu1"), SERVE_HOME)[0] == 0
    url = f"http://{notebook_ip(docker_client, hub, 'stu1')}:8000/answers.txt"
    code, out = exec_in(notebook(docker_client, hub, "stu2"), f"{FETCH} {url}")
    assert code != 0 and "my homework" not in out, out
    # while the hub (on the host) still reaches each server
    assert hub.server_api("stu1", "api/status").status_code == 200
    assert hub.server_api("stu2", "api/status").status_code == 200


def test_private_network_false_lets_a_course_share(hub, docker_client):
    hub.start_server("open1")
    hub.start_server("open2")
    assert exec_in(notebook(docker_client, hub, "open1"), SERVE_HOME)[0] == 0
    url = f"http://{notebook_ip(docker_client, hub, 'open1')}:8000/answers.txt"
    assert exec_in(notebook(docker_client, hub, "open2"), f"{FETCH} {url}") == (0, "my homework\n\n")


def test_a_callable_extra_create_kwargs_cannot_bypass_the_root_check(hub, docker_client):
    message = spawn_failure_message(hub, "sneaky")
    assert "runs as root (root)" in message, message


@pytest.fixture(scope="module")
def hub(make_hub, docker_client):
    return make_hub(USERS, CONFIG)


def test_defaults_on_a_running_notebook(hub, docker_client):
    hub.start_server("plain")
    container = notebook(docker_client, hub, "plain")
    host_config = container.attrs["HostConfig"]
    assert host_config["SecurityOpt"] == ["no-new-privileges:true"]
    assert host_config["CapDrop"] == ["ALL"] and not host_config["CapAdd"]
    assert host_config["PidsLimit"] == 1024
    assert host_config["Init"] is True
    assert not host_config["PortBindings"] and not host_config["Privileged"]
    code, out = exec_in(container, "id -u; grep -E '^(NoNewPrivs|CapEff)' /proc/self/status; cat /proc/1/comm")
    assert code == 0
    uid, *status, pid1 = out.strip().split("\n")
    status = dict(line.split(":\t") for line in status)
    assert uid == "1000"  # the image's user, not root
    assert status == {"CapEff": "0000000000000000", "NoNewPrivs": "1"}
    assert pid1 == "docker-init"


def test_database_keeps_only_what_it_needs(hub, docker_client):
    hub.start_server("plain")
    db = docker_client.containers.get(f"{hub.prefix}-plain_db")
    host_config = db.attrs["HostConfig"]
    assert host_config["CapDrop"] == ["ALL"]
    assert sorted(host_config["CapAdd"]) == ["CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETUID"]
    assert host_config["SecurityOpt"] == ["no-new-privileges:true"]
    assert not host_config["PortBindings"]
    # every postgres process runs as the image's postgres user, not root
    code, out = exec_in(db, 'for p in /proc/[0-9]*; do [ "$(cat $p/comm)" = postgres ] && stat -c %U $p; done; true')
    assert code == 0 and set(out.split()) == {"postgres"}, out


FORK_UNTIL_REFUSED = """
import os, time
children = []
try:
    for _ in range(200):
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        children.append(pid)
    print("unlimited")
except OSError:
    print("refused after", len(children))
finally:
    for pid in children:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
"""


def test_pids_limit_stops_a_fork_bomb(hub, docker_client):
    hub.start_server("pids")
    container = notebook(docker_client, hub, "pids")
    code, out = exec_in(container, f"python3 -c '{FORK_UNTIL_REFUSED}'")
    assert code == 0 and out.startswith("refused after"), out
    assert int(out.split()[-1]) < 48
    assert hub.server_api("pids", "api/status").status_code == 200  # the server survived it


def test_stop_is_graceful_thanks_to_init(hub, docker_client):
    hub.start_server("plain")
    container = notebook(docker_client, hub, "plain")
    container.stop(timeout=10)
    container.reload()
    # SIGTERM reached the server, which exited by itself: not the 137 of a kill after the grace period
    assert container.attrs["State"]["ExitCode"] != 137
    hub.stop_server("plain")


def test_root_is_refused_unless_allowed(hub, docker_client):
    message = spawn_failure_message(hub, "rooty")
    assert "runs as root" in message and "allow_root" in message
    assert not [c for c in docker_client.containers.list(all=True) if c.name.startswith(f"{hub.prefix}-rooty")]
    hub.start_server("admin2")
    code, out = exec_in(notebook(docker_client, hub, "admin2"), "id -u")
    assert out.strip() == "0"
