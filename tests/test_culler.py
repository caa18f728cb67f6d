"""Idle servers go, work stays: jupyterhub-idle-culler, run by a real hub as in the example config, stops an idle
server and its services; the volumes stay and the next start finds the file and the row."""

from __future__ import annotations

import sys

import pytest

from hubstack import POSTGRES_IMAGE, exec_in, notebook, wait_until
from multiuser_spawner import culler

# Short enough for a test, long enough that a loaded machine writes the file and the row before the cull.
IDLE_TIMEOUT = 45
CULL_EVERY = 10

CONFIG = f"""
from multiuser_spawner.culler import idle_culler
culler_service, culler_role = idle_culler(timeout={IDLE_TIMEOUT}, cull_every={CULL_EVERY})
c.JupyterHub.services.append(culler_service)
c.JupyterHub.load_roles.append(culler_role)
c.MultiUserSpawner.services = {{"db": {{"preset": "postgres", "image": {POSTGRES_IMAGE!r}}}}}
"""


# -- the settings, on literal values ------------------------------------------------------------------------------


def test_the_culler_gets_only_the_scopes_it_needs():
    service, role = culler.idle_culler(timeout=3600)
    assert service == {
        "name": "idle-culler",
        "command": [sys.executable, "-m", "jupyterhub_idle_culler", "--timeout=3600"],
    }
    assert role == {
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    }


def test_culling_users_adds_the_one_scope_it_needs():
    service, role = culler.idle_culler(timeout=600, cull_every=60, cull_users=True)
    assert service["command"][-3:] == ["--timeout=600", "--cull-every=60", "--cull-users=true"]
    assert role["scopes"][-1] == "admin:users"


@pytest.mark.parametrize(
    ("kwargs", "named"), [({"timeout": 0}, "timeout=0"), ({"timeout": 60, "cull_every": -1}, "cull_every=-1")]
)
def test_bad_arguments_are_named(kwargs, named):
    with pytest.raises(ValueError, match=named):
        culler.idle_culler(**kwargs)


def test_a_missing_culler_stops_the_config_naming_the_package(monkeypatch):
    monkeypatch.setattr(culler, "CULLER_MODULE", "no_such_module_anywhere")
    with pytest.raises(ValueError, match="jupyterhub-idle-culler is not installed"):
        culler.idle_culler(timeout=60)


# -- the real stack -------------------------------------------------------------------------------------------------


@pytest.mark.docker
def test_an_idle_server_is_culled_and_its_work_is_found_again(make_hub, docker_client):
    hub = make_hub({"idler": []}, CONFIG)
    hub.start_server("idler")
    nb = notebook(docker_client, hub, "idler")
    assert exec_in(nb, "echo 'my homework' > $HOME/homework.txt") == (0, "")
    code, out = exec_in(
        nb, "psql -v ON_ERROR_STOP=1 -c \"CREATE TABLE answers (a text); INSERT INTO answers VALUES ('42')\""
    )
    assert code == 0, out

    # Nobody touches the server from here on: the culler must notice and stop it through the hub's API.
    wait_until(lambda: hub.user("idler")["servers"] == {}, IDLE_TIMEOUT + 4 * CULL_EVERY + 60, "the idle server to go")
    assert "Culling server idler (inactive for" in hub.log_path.read_text()

    prefix = f"{hub.prefix}-idler"
    containers = [c.name for c in docker_client.containers.list(all=True) if c.name.startswith(prefix)]
    networks = [n.name for n in docker_client.networks.list() if n.name.startswith(prefix)]
    assert containers == [] and networks == []
    volumes = {v.name for v in docker_client.volumes.list() if v.name.startswith(prefix)}
    assert volumes == {f"{prefix}_home", f"{prefix}_db"}

    hub.start_server("idler")
    nb = notebook(docker_client, hub, "idler")
    assert exec_in(nb, "cat $HOME/homework.txt") == (0, "my homework\n")
    assert exec_in(nb, "psql -tA -c 'SELECT a FROM answers'") == (0, "42\n")
    hub.stop_server("idler")
