"""The per-user database, set with the deprecated ``database_*`` settings (the service ``db`` with the Postgres
preset), on a private per-server network, on the real stack."""

from __future__ import annotations

import time

import docker
import pytest

from hubstack import exec_in, notebook, spawn_failure_message

pytestmark = pytest.mark.docker

CONFIG = """
c.MultiUserSpawner.group_overrides = {
    "1-db": {"groups": ["db"], "spawner_override": {"database_enabled": True, "mem_limit": "1G"}},
    "2-broken": {"groups": ["broken"], "spawner_override": {
        "database_enabled": True, "database_ready_command": ["false"], "database_ready_timeout": 4}},
    "3-dockerpools": {"groups": ["dockerpools"], "spawner_override": {"network_address_pool": ""}},
}
"""
USERS = {"ada": ["db"], "bob": ["db"], "cy": ["db"], "nodb": [], "eve": ["broken"], "dan": ["db", "dockerpools"]}


@pytest.fixture(scope="module")
def hub(make_hub, docker_client):
    return make_hub(USERS, CONFIG)


def database(docker_client, hub, user):
    return docker_client.containers.get(f"{hub.prefix}-{user}_db")


def sql(container, statement: str) -> tuple[int, str]:
    # a bare psql: host, user, password and database all come from the environment the spawner set
    return exec_in(container, f'psql -v ON_ERROR_STOP=1 -tA -c "{statement}"')


def test_row_survives_stop_start_and_hub_restart(hub, docker_client):
    hub.start_server("ada")
    code, out = sql(
        notebook(docker_client, hub, "ada"), "CREATE TABLE notes (body text); INSERT INTO notes VALUES ('kept')"
    )
    assert code == 0, out
    hub.stop_server("ada")
    hub.start_server("ada")
    assert sql(notebook(docker_client, hub, "ada"), "SELECT body FROM notes") == (0, "kept\n")
    # the stop shut the database down cleanly: no crash recovery on the next start
    logs = database(docker_client, hub, "ada").logs().decode()
    assert "database system was shut down at" in logs and "not properly shut down" not in logs, logs
    hub.restart()
    hub.wait_ready("ada")
    assert hub.server_api("ada", "api/status").status_code == 200
    assert sql(notebook(docker_client, hub, "ada"), "SELECT body FROM notes") == (0, "kept\n")


def test_a_new_database_is_asked_by_the_hub_and_ready_when_the_spawn_ends(hub, docker_client):
    since = int(time.time())
    hub.start_server("cy")  # a new user: the database's first-run setup happens during this spawn
    assert sql(notebook(docker_client, hub, "cy"), "SELECT current_database()") == (0, "jupyter\n")
    # the hub asked Postgres itself, over the private network, instead of running pg_isready in the container
    execs = docker_client.api.events(
        since=since,
        until=int(time.time()) + 1,
        filters={"type": "container", "event": "exec_create", "container": f"{hub.prefix}-cy_db"},
        decode=True,
    )
    assert [event["Action"] for event in execs] == []
    logs = database(docker_client, hub, "cy").logs().decode()
    assert "database initialized in" in logs, logs  # it was new: the setup ran, then the server


def test_environment_has_the_seed_names_the_long_forms_and_libpq(hub, docker_client):
    hub.start_server("ada")
    code, out = exec_in(
        notebook(docker_client, hub, "ada"),
        'echo "$DATABASE_HOST $DATABASE_PORT $DATABASE_USER $DATABASE_NAME $PGHOST $PGPORT $PGUSER $PGDATABASE";'
        'test "$DATABASE_PASS" = "$DATABASE_PASSWORD" && test "$PGPASSWORD" = "$DATABASE_PASS" && echo same;'
        'psql "$DATABASE_URL" -tA -c "SELECT current_user"',
    )
    assert code == 0, out
    assert out.splitlines() == ["db 5432 jupyter jupyter db 5432 jupyter jupyter", "same", "jupyter"]


def test_users_are_isolated_from_each_other(hub, docker_client):
    hub.start_server("ada")
    hub.start_server("bob")
    ada_db = database(docker_client, hub, "ada")
    ada_nb = notebook(docker_client, hub, "ada")
    bob_nb = notebook(docker_client, hub, "bob")
    # their addresses on whatever networks they are on: the test names no network, so it still speaks if a change
    # put two users on one
    ada_db_ip, ada_nb_ip = (
        next(iter(c.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"] for c in (ada_db, ada_nb)
    )
    # ada has a table of her own (made here, so the test stands alone), and sees it ...
    code, out = sql(ada_nb, "CREATE TABLE IF NOT EXISTS secrets (body text); SELECT count(*) FROM secrets")
    assert code == 0, out
    # ... bob's "db" is bob's own database, where ada's table does not exist
    code, out = sql(bob_nb, "SELECT body FROM secrets")
    assert code != 0 and 'relation "secrets" does not exist' in out, out
    # ada's database cannot be reached by container name, nor by IP, with ada's own credentials
    ada_password = ada_nb.attrs["Config"]["Env"]
    ada_password = next(e.split("=", 1)[1] for e in ada_password if e.startswith("DATABASE_PASSWORD="))
    code, out = exec_in(bob_nb, f"getent hosts {ada_db.name}")
    assert code != 0, out
    code, out = exec_in(
        bob_nb, f"PGPASSWORD='{ada_password}' PGCONNECT_TIMEOUT=3 psql -h {ada_db_ip} -tA -c 'SELECT 1'"
    )
    assert code != 0 and "timeout" in out.lower(), out
    # nor ada's notebook server
    code, out = exec_in(
        bob_nb,
        f"python3 -c \"import socket; socket.create_connection(('{ada_nb_ip}', 8888), timeout=3)\"",
    )
    assert code != 0, out
    # while ada reaches her own
    assert sql(ada_nb, "SELECT 1") == (0, "1\n")


def test_credentials_differ_and_never_reach_the_hub_log(hub, docker_client):
    hub.start_server("ada")
    hub.start_server("bob")

    def password(user):
        env = notebook(docker_client, hub, user).attrs["Config"]["Env"]
        return next(e.split("=", 1)[1] for e in env if e.startswith("DATABASE_PASSWORD="))

    assert password("ada") != password("bob")
    assert len(password("ada")) >= 32
    log = hub.log_path.read_text()
    assert password("ada") not in log and password("bob") not in log


def test_database_publishes_no_host_port(hub, docker_client):
    hub.start_server("ada")
    for container in (database(docker_client, hub, "ada"), notebook(docker_client, hub, "ada")):
        assert not container.attrs["HostConfig"].get("PortBindings")
        assert not any(container.attrs["NetworkSettings"]["Ports"].values())
    assert set(database(docker_client, hub, "ada").attrs["NetworkSettings"]["Networks"]) == {f"{hub.prefix}-ada_net"}


def test_without_services_a_private_network_but_no_service_container(hub, docker_client):
    hub.start_server("nodb")
    nb = notebook(docker_client, hub, "nodb")
    assert set(nb.attrs["NetworkSettings"]["Networks"]) == {f"{hub.prefix}-nodb_net"}
    assert not [c for c in docker_client.containers.list(all=True) if c.name == f"{hub.prefix}-nodb_db"]
    assert "DATABASE_URL" not in " ".join(notebook(docker_client, hub, "nodb").attrs["Config"]["Env"])


def test_start_stop_cycles_leave_only_the_volumes(hub, docker_client):
    for _ in range(3):
        hub.start_server("bob")
        hub.stop_server("bob")
    prefix = f"{hub.prefix}-bob"
    assert not [c.name for c in docker_client.containers.list(all=True) if c.name.startswith(prefix)]
    assert not [n.name for n in docker_client.networks.list() if n.name.startswith(prefix)]
    volumes = sorted(v.name for v in docker_client.volumes.list() if v.name.startswith(prefix))
    assert volumes == [f"{prefix}_db", f"{prefix}_home"]


def test_database_that_never_gets_ready_fails_the_spawn_with_its_logs(hub, docker_client):
    message = spawn_failure_message(hub, "eve")
    assert f"service db (container {hub.prefix}-eve_db)" in message
    assert "not ready after 4 s" in message
    assert "false exited 1" in message
    assert "database system is ready to accept connections" in message  # its last log lines
    # nothing half-made is left: no containers, no network; the volumes stay
    prefix = f"{hub.prefix}-eve"
    assert not [c.name for c in docker_client.containers.list(all=True) if c.name.startswith(prefix)]
    assert not [n.name for n in docker_client.networks.list() if n.name.startswith(prefix)]


def test_hub_in_a_container_joins_each_user_network(make_hub, docker_client):
    # A stand-in for a hub running in a container: the spawner joins it to the user's private network, where it
    # and the notebook reach each other by name and address; it leaves the network when the server stops.
    standin = docker_client.containers.run(
        "multiuser-spawner/singleuser:latest", ["sleep", "600"], name="tstandin-hub", detach=True
    )
    try:
        hub = make_hub(
            {"cat": []},
            'c.MultiUserSpawner.database_enabled = True\nc.MultiUserSpawner.hub_container_name = "tstandin-hub"\n',
        )
        hub.start_server("cat")
        net = f"{hub.prefix}-cat_net"
        standin.reload()
        assert net in standin.attrs["NetworkSettings"]["Networks"]
        nb = docker_client.containers.get(f"{hub.prefix}-cat")
        nb_ip = nb.attrs["NetworkSettings"]["Networks"][net]["IPAddress"]
        code, out = exec_in(
            standin, f"python3 -c \"import socket; socket.create_connection(('{nb_ip}', 8888), timeout=5)\""
        )
        assert code == 0, out
        assert exec_in(nb, "getent hosts tstandin-hub")[0] == 0
        hub.stop_server("cat")
        standin.reload()
        assert net not in standin.attrs["NetworkSettings"]["Networks"]
        assert not docker_client.networks.list(names=[net])
    finally:
        standin.remove(force=True)


def test_with_dockers_pools_used_up_the_spawners_own_pool_still_starts_servers(hub, docker_client):
    # Docker's default address pools hold about 30 bridge networks; a large class would run out of them.
    filled = []
    try:
        while True:
            try:
                filled.append(docker_client.networks.create(f"{hub.prefix}-fill-{len(filled)}", driver="bridge"))
            except docker.errors.APIError as e:
                assert "address pool" in str(e), e
                break
            assert len(filled) < 1000, "this engine's address pools seem unlimited"
        # the spawner's own pool (network_address_pool) does not depend on Docker's
        hub.start_server("bob")
        subnet = docker_client.networks.get(f"{hub.prefix}-bob_net").attrs["IPAM"]["Config"][0]["Subnet"]
        assert subnet.startswith("10.201.") and subnet.endswith("/28"), subnet
        # without it, the spawn fails saying what to do
        message = spawn_failure_message(hub, "dan")
    finally:
        for network in filled:
            network.remove()
    assert f"creating network {hub.prefix}-dan_net failed" in message
    assert "network_address_pool" in message and "/etc/docker/daemon.json" in message
    assert not [c.name for c in docker_client.containers.list(all=True) if c.name.startswith(f"{hub.prefix}-dan")]
    hub.start_server("dan")  # with ranges free again, the same user starts
