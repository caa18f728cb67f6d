"""Per-user services on the real stack: Postgres, Redis and RabbitMQ beside one notebook, private to its user,
held to their limits, released when the notebook dies, and found again after an upgrade."""

from __future__ import annotations

import textwrap
import time

import pytest

from hubstack import (
    POSTGRES_IMAGE,
    RABBITMQ_IMAGE,
    REDIS_IMAGE,
    SINGLEUSER_IMAGE,
    exec_in,
    notebook,
    running_container_names,
    spawn_failure_message,
)

pytestmark = pytest.mark.docker

CONFIG = f"""
c.Spawner.poll_interval = 2
c.MultiUserSpawner.services = {{
    "db": {{"preset": "postgres", "image": {POSTGRES_IMAGE!r}}},
    "cache": {{"preset": "redis", "image": {REDIS_IMAGE!r}, "mem_limit": "64M"}},
    "queue": {{"preset": "rabbitmq", "image": {RABBITMQ_IMAGE!r}}},
}}
c.MultiUserSpawner.group_overrides = {{
    "1-small": {{"groups": ["small"], "spawner_override": {{"mem_limit": "200M"}}}},
}}
"""
USERS = {"ada": [], "bob": [], "oom": ["small"]}


@pytest.fixture(scope="module")
def hub(make_hub, docker_client):
    for image in (REDIS_IMAGE, RABBITMQ_IMAGE):
        docker_client.images.get(image)  # built by images/build.sh; a missing one is a failure, not a skip
    return make_hub(USERS, CONFIG)


def run_python(container, code: str) -> tuple[int, str]:
    result = container.exec_run(["python3", "-c", textwrap.dedent(code)])
    return result.exit_code, result.output.decode("utf-8", "replace")


WRITE = """
import os
import pika, psycopg, redis

redis.Redis.from_url(os.environ["REDIS_URL"]).set("greeting", "kept in redis")
with psycopg.connect("") as conn:  # host, user, password and database from the PG* variables alone
    conn.execute("CREATE TABLE notes (body text)")
    conn.execute("INSERT INTO notes VALUES ('kept in postgres')")
channel = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"])).channel()
channel.queue_declare("work", durable=True)
channel.basic_publish("", "work", b"a message", pika.BasicProperties(delivery_mode=2))
print("written")
"""

READ = """
import os
import pika, psycopg, redis

print(redis.Redis.from_url(os.environ["REDIS_URL"]).get("greeting").decode())
with psycopg.connect("") as conn:
    print(conn.execute("SELECT body FROM notes").fetchone()[0])
channel = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"])).channel()
method, properties, body = channel.basic_get("work", auto_ack=True)
print(body.decode())
"""


def test_a_notebook_uses_its_postgres_redis_and_rabbitmq_and_finds_them_after_a_restart(hub, docker_client):
    hub.start_server("ada")
    assert run_python(notebook(docker_client, hub, "ada"), WRITE) == (0, "written\n")
    hub.stop_server("ada")
    assert not [c.name for c in docker_client.containers.list(all=True) if c.name.startswith(f"{hub.prefix}-ada")]
    hub.start_server("ada")
    code, out = run_python(notebook(docker_client, hub, "ada"), READ)
    assert (code, out) == (0, "kept in redis\nkept in postgres\na message\n"), out


def test_another_users_notebook_can_neither_resolve_nor_reach_them(hub, docker_client):
    hub.start_server("ada")
    hub.start_server("bob")
    bob = notebook(docker_client, hub, "bob")
    # bob resolves his own services by their aliases, and none of ada's
    code, out = exec_in(bob, "getent hosts cache queue db")
    own = {line.split()[0] for line in out.splitlines()}
    ada_ips = {}
    for key in ("db", "cache", "queue"):
        attrs = docker_client.containers.get(f"{hub.prefix}-ada_{key}").attrs
        ada_ips[key] = next(iter(attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
    assert own and not own & set(ada_ips.values()), (out, ada_ips)
    probe = """
import socket, sys
for ip, port in zip(sys.argv[1::2], sys.argv[2::2]):
    s = socket.socket(); s.settimeout(2)
    print(ip, "open" if s.connect_ex((ip, int(port))) == 0 else "closed")
"""
    args = [x for key, port in (("db", "5432"), ("cache", "6379"), ("queue", "5672")) for x in (ada_ips[key], port)]
    result = bob.exec_run(["python3", "-c", probe, *args])
    assert result.exit_code == 0
    assert "open" not in result.output.decode().split(), result.output.decode()
    # nor ada's notebook itself
    ada_nb = notebook(docker_client, hub, "ada").attrs["NetworkSettings"]["Networks"]
    ada_ip = next(iter(ada_nb.values()))["IPAddress"]
    result = bob.exec_run(["python3", "-c", probe, ada_ip, "8888"])
    assert result.output.decode().split() == [ada_ip, "closed"]


def test_each_service_is_held_to_its_limit(hub, docker_client):
    hub.start_server("ada")
    cache = docker_client.containers.get(f"{hub.prefix}-ada_cache")
    assert cache.attrs["HostConfig"]["Memory"] == 64 * 2**20
    assert cache.attrs["HostConfig"]["CpuQuota"] == 25_000
    # a process in the service that wants more memory than the limit is killed by the kernel
    code, out = exec_in(cache, "head -c 200000000 /dev/zero | tail -n 1 >/dev/null; echo status=$?")
    assert "status=137" in out, out
    for key in ("db", "queue"):
        assert docker_client.containers.get(f"{hub.prefix}-ada_{key}").attrs["HostConfig"]["Memory"] > 0


def test_a_notebook_killed_by_its_memory_limit_leaves_no_service_or_network_running(hub, docker_client):
    hub.start_server("oom")
    # make the server itself the OOM killer's first choice (raising one's own score needs no privilege; the
    # pattern does not match this shell's own command line, whose children would inherit the score), then push
    # the container past its 200M limit; the hub never calls stop() for a server that died
    exec_in(
        notebook(docker_client, hub, "oom"),
        'for p in /proc/[0-9]*; do grep -q "jupyterhub-single[u]ser" $p/cmdline 2>/dev/null'
        " && echo 1000 > $p/oom_score_adj; done; python3 -c 'x = bytearray(150 * 2**20); y = bytearray(150 * 2**20)'",
    )
    # the hub's poll tells it was the memory limit, not a crash
    killed = f"Container {hub.prefix}-oom was killed by its memory limit"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and killed not in hub.log_path.read_text():
        time.sleep(0.5)
    assert killed in hub.log_path.read_text()
    # the hub notices the dead notebook at its next poll, and the services and network go with it
    deadline = time.monotonic() + 60
    left = ["?"]
    while time.monotonic() < deadline:
        left = running_container_names(docker_client, f"{hub.prefix}-oom_")
        left += [n.name for n in docker_client.networks.list(names=[f"{hub.prefix}-oom_net"])]
        if not left and not hub.user("oom")["servers"]:
            break
        time.sleep(1)
    assert left == [], left
    volumes = {v.name for v in docker_client.volumes.list(filters={"name": f"{hub.prefix}-oom_"})}
    assert {f"{hub.prefix}-oom_db", f"{hub.prefix}-oom_cache", f"{hub.prefix}-oom_queue"} <= volumes


def test_a_service_that_never_gets_ready_fails_the_spawn_naming_it(make_hub, docker_client):
    broken = make_hub(
        {"eve": []},
        f"""
c.MultiUserSpawner.services = {{
    "cache": {{"preset": "redis", "image": {REDIS_IMAGE!r}}},
    "search": {{
        "image": {SINGLEUSER_IMAGE!r}, "command": ["sh", "-c", "echo indexing forever; sleep 600"],
        "port": 9200, "volume": "/data", "ready_timeout": 6,
    }},
}}
""",
    )
    message = spawn_failure_message(broken, "eve")
    assert "service search" in message and "not ready after 6 s" in message, message
    assert "indexing forever" in message  # its last log lines
    # nothing is left but the volumes
    left = [c.name for c in docker_client.containers.list(all=True) if c.name.startswith(f"{broken.prefix}-")]
    left += [n.name for n in docker_client.networks.list() if n.name.startswith(f"{broken.prefix}-")]
    assert left == []
    volumes = {v.name for v in docker_client.volumes.list() if v.name.startswith(f"{broken.prefix}-")}
    assert volumes == {f"{broken.prefix}-eve_home", f"{broken.prefix}-eve_cache", f"{broken.prefix}-eve_search"}


def test_a_database_of_the_first_release_is_found_again_after_the_upgrade(make_hub, docker_client):
    """The first release kept the database's password as a ``database-password`` label on a volume of role
    ``database-data``; a hub with the new ``services`` setting must find the volume, the password and the rows."""
    hub = make_hub(
        {"old": []}, f'c.MultiUserSpawner.services = {{"db": {{"preset": "postgres", "image": {POSTGRES_IMAGE!r}}}}}'
    )
    volume_name, password = f"{hub.prefix}-old_db", "released-layout-password"
    docker_client.volumes.create(
        volume_name,
        labels={
            "org.multiuser-spawner.managed": "true",
            "org.multiuser-spawner.user": "old",
            "org.multiuser-spawner.server": "",
            "org.multiuser-spawner.role": "database-data",
            "org.multiuser-spawner.database-password": password,
        },
    )
    env = {"POSTGRES_USER": "jupyter", "POSTGRES_PASSWORD": password, "POSTGRES_DB": "jupyter"}
    released = docker_client.containers.run(
        POSTGRES_IMAGE, detach=True, environment=env, volumes={volume_name: {"bind": "/var/lib/postgresql/data"}}
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            code, _ = exec_in(released, "pg_isready -q -h 127.0.0.1", user="postgres")
            if code == 0:
                break
            time.sleep(0.5)
        code, out = exec_in(
            released,
            f"PGPASSWORD={password} psql -v ON_ERROR_STOP=1 -U jupyter -d jupyter -h 127.0.0.1 "
            "-c \"CREATE TABLE notes (body text); INSERT INTO notes VALUES ('from the first release')\"",
            user="postgres",
        )
        assert code == 0, out
    finally:
        released.stop(timeout=20)
        released.remove()
    hub.start_server("old")
    code, out = exec_in(notebook(docker_client, hub, "old"), 'psql -tA -c "SELECT body FROM notes"')
    assert (code, out) == (0, "from the first release\n"), out


def test_sixty_servers_with_a_service_each_on_a_stock_engine_and_no_leftovers(make_hub, docker_client):
    """Docker's default pools hold about 30 networks; the spawner's own pool holds thousands."""
    users = {f"u{i:02d}": [] for i in range(60)}
    light = '["sh", "-c", "trap \\"exit 0\\" TERM; python3 -u -m http.server 8888 & wait", "light-server"]'
    crowd = make_hub(
        users,
        f"""
c.Spawner.cmd = {light}
c.Spawner.mem_limit = "64M"
c.JupyterHub.concurrent_spawn_limit = 0
c.MultiUserSpawner.services = {{
    "echo": {{"image": {SINGLEUSER_IMAGE!r}, "port": 7000, "mem_limit": "32M", "cpu_limit": 0.1,
             "command": ["python3", "-m", "http.server", "7000"]}},
}}
""",
    )
    for user in users:
        r = crowd.request("POST", f"/users/{user}/server", json={})
        assert r.status_code in (201, 202), (user, r.status_code, r.text)
    for user in users:
        crowd.wait_ready(user, timeout=600)
    networks = [n for n in docker_client.networks.list() if n.name.startswith(f"{crowd.prefix}-")]
    assert len(networks) == 60
    subnets = {n.attrs["IPAM"]["Config"][0]["Subnet"] for n in networks}
    assert len(subnets) == 60 and all(s.startswith("10.201.") for s in subnets)
    for user in users:
        r = crowd.request("DELETE", f"/users/{user}/server")
        assert r.status_code in (202, 204)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and any(crowd.user(u)["servers"] for u in users):
        time.sleep(1)
    left = [c.name for c in docker_client.containers.list(all=True) if c.name.startswith(f"{crowd.prefix}-")]
    left += [n.name for n in docker_client.networks.list() if n.name.startswith(f"{crowd.prefix}-")]
    assert left == []


def test_doctor_and_ls_know_each_service(hub, docker_client):
    from test_cli import run_cli  # noqa: PLC0415 - the CLI harness lives with the CLI tests

    hub.start_server("ada")
    result = run_cli(hub, "ls", "--no-sizes")
    assert result.returncode == 0, result.stderr
    for key in ("db", "cache", "queue"):
        assert f"service {key}" in result.stdout and f"{hub.prefix}-ada_{key}" in result.stdout
