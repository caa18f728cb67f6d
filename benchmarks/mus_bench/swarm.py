"""The Swarm scenarios, on the swarm the host's engine manages (``scripts/swarm up``: the host is the manager, its
workers are Docker engines in containers of this machine):

- ``swarm-floor``: per user, what MultiUserSwarmSpawner makes for a server without services, made directly with
  docker-py and no hub: an attachable overlay network, the hub's container attached to it, and one service (same
  image, limits, init, home volume, ``dnsrr`` endpoint, restart condition ``none``); ready when the server answers
  the hub's readiness request; stopped by removing the service, waiting until its task is gone, detaching the hub's
  container and removing the network;
- ``swarm-docker``: DockerSpawner's own ``SwarmSpawner`` behind a real hub;
- ``swarm-multiuser``: ``MultiUserSwarmSpawner`` behind a real hub;
- ``swarm-multiuser-shared``: the same without a private network per server (``private_network = False``), every
  server on one overlay, as SwarmSpawner runs them (a diagnostic: the same network design on both sides).

A hub on a swarm must run in a container on a manager, attached to the servers' overlays. As in the tests
(``tests/test_swarm.py``), the hub is the checkout's JupyterHub process run in the network namespace of a container
on the manager (``nsenter --net``), with the container's DNS (Docker's resolver, which knows the overlays' names):
``SwarmSpawner`` gives the hub a service's *name* as the server's address. The floor's readiness probes and its hub
stub run in that same namespace (threads that enter it), so the floor reaches its servers the way a hub does.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker

from hubstack import SINGLEUSER_IMAGE, HubStack

from .containers import docker_time, remove_objects
from .floors import HubStub, singleuser_environment
from .hubs import COMMON_HUB_CONFIG, TIMING_WRAPPER, HubDriver, hub_phases, server_config
from .machine import CpuMeter, Proc, wait_for_quiet
from .probes import server_answers, wait_until
from .results import Burst
from .scenarios import CPU_LIMIT, HOME, MEM_LIMIT, ROUNDS, SERVER_PORT, ServerKind, run_at_once, user_names

#: the directory every node of the test swarm mounts at the same path (an NFS export's stand-in; scripts/swarm)
SHARED_ROOT = Path(os.environ.get("MUS_SWARM_SHARED", "/srv/mus-swarm-shared"))
WORKER_LABELS = ["org.multiuser-spawner.managed=true", "org.multiuser-spawner.role=swarm-node"]
HUB_LABEL = "multiuser-spawner-bench.hub"  # the hub containers' label: whose run (prefix) each belongs to
STUB_PORT = 8081
HUB_SETTLE_WAIT = 10  # most seconds to wait for a quiet machine after the hub started and between rounds
TASK_CHECK_INTERVAL = 0.1  # how often the floor reads its service's task while it waits for an address
REMOVAL_CHECK_INTERVAL = 0.25
CLONE_NEWNET = 0x40000000
NESTED_CONTAINER = re.compile(r":/mus-node[^/\n]*/([0-9a-f]{64})")
PIDS_LIMIT = 1024  # MultiUserSpawner's default pids_limit, which its Swarm spawner puts in the service's limits
STOP_GRACE_SECONDS = 10

_libc = ctypes.CDLL(None, use_errno=True)


# -- the hub's container ------------------------------------------------------------------------------------------


class HubContainer:
    """A container on the manager whose network namespace stands for a hub's container: it joins the overlays, and
    the hub process (or the floor's threads) enter its namespace."""

    def __init__(self, client: docker.DockerClient, prefix: str):
        self.client = client
        self.container = client.containers.run(
            SINGLEUSER_IMAGE,
            ["sleep", "infinity"],
            name=f"{prefix}-hub",
            labels={HUB_LABEL: prefix},
            detach=True,
        )
        self.container.reload()
        self.name = self.container.name
        self.pid = self.container.attrs["State"]["Pid"]
        self.address = self.container.attrs["NetworkSettings"]["IPAddress"]

    def enter(self) -> None:
        """Move the calling thread (only it) into the container's network namespace."""
        fd = os.open(f"/proc/{self.pid}/ns/net", os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the hub container's network namespace failed")
        finally:
            os.close(fd)

    def launcher(self, workdir: Path) -> list[str]:
        """What the hub command runs under: its own mount namespace, where /etc/resolv.conf names Docker's resolver
        (as in a container on a user-defined network), and the container's network namespace."""
        resolv = workdir / "resolv.conf"
        resolv.write_text("nameserver 127.0.0.11\noptions ndots:0\n")
        enter = f'mount --bind {resolv} /etc/resolv.conf && exec nsenter --target={self.pid} --net "$@"'
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", enter, "hub"]

    def image_uid(self) -> int:
        """The uid the image's user has (the owner a bind-mounted home directory needs)."""
        return int(self.container.exec_run(["id", "-u"]).output.decode().strip())

    def remove(self) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.container.remove(force=True)


def run_in_namespace(holder: HubContainer, work: Callable[[], Any]) -> Any:
    """``work()`` in a new thread inside the hub container's network namespace; its result (or its exception)."""
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            holder.enter()
            box["result"] = work()
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


# -- what the swarm runs, and who used the CPU ---------------------------------------------------------------------


def worker_containers(client: docker.DockerClient) -> list[Any]:
    return client.containers.list(filters={"label": WORKER_LABELS})


def services_of(api: docker.APIClient, prefix: str) -> list[dict[str, Any]]:
    return [s for s in api.services() if s["Spec"]["Name"].startswith(f"{prefix}-")]


def service_user(service: dict[str, Any]) -> str:
    """The user a notebook service serves, from its environment (``JUPYTERHUB_USER``), or ""."""
    for entry in service["Spec"]["TaskTemplate"]["ContainerSpec"].get("Env") or []:
        if entry.startswith("JUPYTERHUB_USER="):
            return entry.split("=", 1)[1]
    return ""


def task_containers(api: docker.APIClient, service_ids: set[str]) -> set[str]:
    return {
        ((t.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID", "")
        for t in api.tasks()
        if t.get("ServiceID") in service_ids
    } - {""}


class SwarmCpuMeter(CpuMeter):
    """:class:`CpuMeter` that also counts the swarm's workers: their engines (the processes of the workers'
    containers) as the engine, the tasks of the benchmark's services on them as its containers, and every other
    task there (another run's, anyone's) as other work."""

    def __init__(self, client: docker.DockerClient, prefix: str, groups: dict[str, list[int]]):
        super().__init__(client.api, prefix, groups, classify=self._classify)
        self.workers = {c.id for c in worker_containers(client)}
        self.ours: set[str] = set()

    def stop(self) -> dict[str, Any]:
        self.ours = task_containers(self.api, {s["ID"] for s in services_of(self.api, self.prefix)})
        result = super().stop()
        result["foreign_services"] = sorted(
            s["Spec"]["Name"] for s in self.api.services() if not s["Spec"]["Name"].startswith(f"{self.prefix}-")
        )[:10]
        return result

    def _classify(self, proc: Proc) -> str | None:
        nested = NESTED_CONTAINER.search(proc.cgroup)
        if nested:
            return "containers" if nested.group(1) in self.ours else "other"
        if proc.container in self.workers:
            return "docker_engine"  # a worker's engine, and the helpers it runs (runc, iptables, its init)
        return None


def task_timelines(
    api: docker.APIClient, prefix: str, t0: float, up_marker: str, since: float
) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Per user, seconds after ``t0`` when Swarm had the notebook's task running and when its server logged
    ``up_marker``; and the node each task ran on. Read after the burst through the manager (the logs of tasks on
    other nodes too)."""
    offset = time.time() - time.monotonic()
    timelines: dict[str, dict[str, float]] = {}
    nodes: dict[str, str] = {}
    for service in services_of(api, prefix):
        user = service_user(service)
        if not user:
            continue
        timeline = timelines.setdefault(user, {})
        tasks = [t for t in api.tasks(filters={"service": service["ID"]}) if t["Status"]["State"] == "running"]
        if tasks:
            timeline["container_running"] = round(docker_time(tasks[0]["Status"]["Timestamp"]) - offset - t0, 3)
            nodes[user] = tasks[0]["NodeID"]
        with contextlib.suppress(docker.errors.APIError):
            raw = api.service_logs(service["ID"], stdout=True, stderr=True, timestamps=True, since=int(since))
            text = (raw if isinstance(raw, bytes) else b"".join(raw)).decode("utf-8", "replace")
            for line in text.splitlines():
                if up_marker in line:
                    stamp = next((word for word in line.split() if re.match(r"\d{4}-\d\d-\d\dT", word)), "")
                    if stamp:
                        timeline["server_up"] = round(docker_time(stamp) - offset - t0, 3)
                        break
    return timelines, nodes


def node_names(api: docker.APIClient, nodes: dict[str, str]) -> dict[str, int]:
    """How many of the servers each node ran, by its hostname."""
    hostnames = {n["ID"]: n["Description"]["Hostname"] for n in api.nodes()}
    counts: dict[str, int] = {}
    for node in nodes.values():
        counts[hostnames.get(node, node)] = counts.get(hostnames.get(node, node), 0) + 1
    return dict(sorted(counts.items()))


def wait_until_gone(api: docker.APIClient, service_ids: set[str], timeout: float) -> float:
    """Wait until no task of these services is listed; return when (``time.monotonic()``)."""
    deadline = time.monotonic() + timeout
    while any(t.get("ServiceID") in service_ids for t in api.tasks()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"tasks of {len(service_ids)} services still listed {timeout:.0f} s after removal")
        time.sleep(REMOVAL_CHECK_INTERVAL)
    return time.monotonic()


def swarm_problem(api: docker.APIClient) -> str:
    """Why the swarm is not whole now ("" when every node is ready and active): another run may drain a node or
    restart an engine, and a burst measured meanwhile measures that."""
    problems = [
        f"{n['Description']['Hostname']} is {n['Status']['State']}/{n['Spec']['Availability']}"
        for n in api.nodes()
        if n["Status"]["State"] != "ready" or n["Spec"]["Availability"] != "active"
    ]
    return "; ".join(problems)


def ensure_whole_swarm(client: docker.DockerClient, limit: float = 300) -> None:
    """Wait (at most ``limit`` seconds) until every node is ready and active; bring the test swarm back (as the
    tests' fixture does, ``scripts/swarm up``) when a worker's engine is not running."""
    from swarmstack import SwarmStack  # the tests' harness: it imports pytest, which only a swarm run needs

    stack = SwarmStack(client)
    deadline = time.monotonic() + limit
    while swarm_problem(client.api) or not stack.whole():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the swarm is not whole: {swarm_problem(client.api) or 'a worker is down'}")
        if any(c.status != "running" for c in stack.worker_containers()):
            stack.up()
        time.sleep(2)


def check_swarm_unchanged(result: Burst, api: docker.APIClient) -> None:
    """Count a burst during which a node went down or was drained as failed (measured again in a later pass)."""
    problem = swarm_problem(api)
    if problem and not result.error:
        result.error = f"the swarm changed during the burst: {problem}"


# -- the floor ----------------------------------------------------------------------------------------------------


def floor_service_spec(
    prefix: str,
    user: str,
    server: ServerKind,
    network_id: str,
    hub_api_url: str,
    node: str,
    constraints: list[str],
) -> dict[str, Any]:
    """docker-py's ``create_service`` arguments for one user's notebook: what MultiUserSwarmSpawner asks Swarm for
    a server without services (image, environment, home volume, init, capabilities, limits, restart condition,
    ``dnsrr`` endpoint, the server's overlay), written out here, not built by the spawner's code. ``node``: the
    node the user's home volume lives on (a returning user), or "" (a new user: the scheduler places it);
    ``constraints``: the run's placement constraints, given to every scenario alike."""
    container: dict[str, Any] = {
        "Image": SINGLEUSER_IMAGE,
        "Env": [f"{k}={v}" for k, v in singleuser_environment(user, hub_api_url).items()],
        "Mounts": [{"Type": "volume", "Source": f"{prefix}-{user}_home", "Target": HOME, "ReadOnly": False}],
        "Init": True,
        "CapabilityDrop": ["ALL"],
        "StopGracePeriod": STOP_GRACE_SECONDS * 1_000_000_000,
    }
    if server.command:
        container["Args"] = list(server.command)
    return {
        "name": f"{prefix}-{user}",
        "mode": {"Replicated": {"Replicas": 1}},
        "endpoint_spec": {"Mode": "dnsrr"},
        "task_template": {
            "ContainerSpec": container,
            "Resources": {
                "Limits": {"NanoCPUs": int(CPU_LIMIT * 1e9), "MemoryBytes": MEM_LIMIT, "Pids": PIDS_LIMIT},
                "Reservations": {},
            },
            "RestartPolicy": {"Condition": "none"},
            "Placement": {"Constraints": [*constraints, *([f"node.id=={node}"] if node else [])]},
            "Networks": [{"Target": network_id}],
        },
    }


def running_task_address(api: docker.APIClient, service_id: str, network: str, deadline: float) -> dict[str, Any]:
    """The service's task once it runs and has an address on ``network``; Swarm's reason if it cannot run."""
    while time.monotonic() < deadline:
        for task in api.tasks(filters={"service": service_id}):
            status = task["Status"]
            if status["State"] in ("failed", "rejected", "shutdown", "complete", "orphaned"):
                raise RuntimeError(f"task of {service_id} {status['State']}: {status.get('Err') or status['Message']}")
            if status["State"] == "running":
                for attachment in task.get("NetworksAttachments") or []:
                    if attachment["Network"]["Spec"]["Name"] == network and attachment.get("Addresses"):
                        return {"ip": attachment["Addresses"][0].split("/")[0], "node": task["NodeID"]}
        time.sleep(TASK_CHECK_INTERVAL)
    raise TimeoutError(f"no task of {service_id} ran")


def remove_network_when_free(api: docker.APIClient, network: str, timeout: float = 30) -> None:
    """A network leaves a moment after the last task's endpoint: retry its removal until it is gone."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            api.remove_network(network)
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError:
            if time.monotonic() > deadline:
                raise
            time.sleep(REMOVAL_CHECK_INTERVAL)


def swarm_floor_burst(
    client: docker.DockerClient, prefix: str, n: int, server: ServerKind, timeout: float, constraints: list[str]
) -> list[Burst]:
    """The floor: N users' servers made at once with docker-py (no hub), then removed; then the same users once more,
    each on the node that holds their home volume."""
    holder = HubContainer(client, prefix)
    try:
        stub = run_in_namespace(holder, lambda: HubStub(bind=("0.0.0.0", STUB_PORT), public_host=holder.name))
        with stub:
            nodes: dict[str, str] = {}
            return [
                swarm_floor_round(client, prefix, n, server, timeout, holder, stub, returning, nodes, constraints)
                for returning in ROUNDS
            ]
    finally:
        holder.remove()


def swarm_floor_round(
    client: docker.DockerClient,
    prefix: str,
    n: int,
    server: ServerKind,
    timeout: float,
    holder: HubContainer,
    stub: HubStub,
    returning: bool,
    nodes: dict[str, str],
    constraints: list[str],
) -> Burst:
    api = client.api
    result = Burst("swarm-floor", server.name, n, returning)
    users = user_names(n)
    services: dict[str, str] = {}
    meter = SwarmCpuMeter(client, prefix, {"bench": [os.getpid()]})

    def start_one(i: int, t0: float) -> None:
        holder.enter()
        user = users[i]
        network = f"{prefix}-{user}_net"
        created = api.create_network(network, driver="overlay", attachable=True, check_duplicate=True)
        api.connect_container_to_network(holder.name, created["Id"])
        spec = floor_service_spec(prefix, user, server, created["Id"], stub.api_url, nodes.get(user, ""), constraints)
        services[user] = api.create_service(**spec)["ID"]
        task = running_task_address(api, services[user], network, t0 + timeout)
        nodes.setdefault(user, task["node"])
        wait_until(
            [lambda: server_answers(task["ip"], SERVER_PORT, f"/user/{user}/api")],
            t0,
            timeout,
            f"{user}'s server did not answer",
        )
        result.ready[user] = round(time.monotonic() - t0, 3)

    ensure_whole_swarm(client)
    since = time.time() - 1
    meter.start()
    try:
        t0 = run_at_once(n, start_one, timeout + 30)
        result.cpu = meter.stop()
        check_swarm_unchanged(result, api)
        result.phases, placed = task_timelines(api, prefix, t0, server.up_marker, since)
        result.notes["servers_per_node"] = node_names(api, placed)
    except Exception as e:
        result.error = f"start: {e!r}"
        result.cpu = result.cpu or meter.stop()

    def stop_one(i: int, t0: float) -> None:
        user = users[i]
        network = f"{prefix}-{user}_net"
        if user in services:
            api.remove_service(services[user])
            wait_until_gone(api, {services[user]}, STOP_GRACE_SECONDS + 30)
        with contextlib.suppress(docker.errors.NotFound):
            api.disconnect_container_from_network(holder.name, network)
        remove_network_when_free(api, network)
        result.stopped[user] = round(time.monotonic() - t0, 3)

    try:
        run_at_once(n, stop_one, 120 + 5 * n)
    except Exception as e:
        result.error = result.error or f"stop: {e!r}"
    remove_services_and_networks(client, prefix, holder.name)  # whatever a failed round left; the volumes stay
    return result


# -- the hubs -----------------------------------------------------------------------------------------------------


def swarm_hub_config(
    kind: str, prefix: str, n: int, server: ServerKind, holder: HubContainer, timeout: int, constraints: list[str]
) -> str:
    """Each spawner with its own settings for the same servers: image, limits, command, the prefix of its names,
    and the run's placement constraints."""
    common = COMMON_HUB_CONFIG.format(limit=max(100, 2 * n), timeout=timeout)
    if kind == "swarm-docker":
        section = "SwarmSpawner"
        # One network for every server (SwarmSpawner's design), the hub's container on it; the server's address is
        # its service's name (use_internal_ip), resolved by Docker's DNS; dnsrr, as a VIP needs IPVS, which this
        # kernel lacks. Its mounts are binds: the home is a directory of the shared mount every node has.
        spawner = f"""
        c.SwarmSpawner.network_name = {shared_network(prefix)!r}
        c.SwarmSpawner.use_internal_ip = True
        c.SwarmSpawner.extra_endpoint_spec = {{"mode": "dnsrr"}}
        c.SwarmSpawner.prefix = {prefix!r}
        c.SwarmSpawner.volumes = {{{str(shared_homes(prefix)) + "/{username}"!r}: {HOME!r}}}
        """
        if constraints:
            spawner += f"""
        c.SwarmSpawner.extra_placement_spec = {{"constraints": {constraints!r}}}
        """
        wrapper = TIMING_WRAPPER.format(module="dockerspawner", cls="SwarmSpawner")
    else:
        section = "MultiUserSpawner"
        spawner = f"""
        c.MultiUserSpawner.hub_container_name = {holder.name!r}
        """
        if kind == "swarm-multiuser-shared":
            spawner += f"""
        c.MultiUserSpawner.private_network = False
        c.MultiUserSpawner.network_name = {shared_network(prefix)!r}
        """
        if constraints:
            spawner += f"""
        c.MultiUserSwarmSpawner.swarm_placement_constraints = {constraints!r}
        """
        wrapper = TIMING_WRAPPER.format(module="multiuser_spawner.swarm_spawner", cls="MultiUserSwarmSpawner")
    spawner += server_config(section, server)
    return textwrap.dedent(common) + textwrap.dedent(spawner) + wrapper


def swarm_constraints(text: str) -> list[str]:
    """``--swarm-constraints``, comma-separated, as a list."""
    return [c.strip() for c in text.split(",") if c.strip()]


def shared_network(prefix: str) -> str:
    """The one overlay of every server, for the scenarios that use one (SwarmSpawner's design)."""
    return f"{prefix}-net"


def shared_homes(prefix: str) -> Path:
    return SHARED_ROOT / prefix


def swarm_hub_burst(
    kind: str,
    prefix: str,
    n: int,
    server: ServerKind,
    workdir: Path,
    client: docker.DockerClient,
    timeout: int,
    constraints: list[str],
) -> list[Burst]:
    """N users start at once through a new hub in a container's namespace on the manager, then stop; then the same
    users once more, on the same hub."""
    users = user_names(n)
    workdir.mkdir(parents=True, exist_ok=True)
    results = [Burst(kind, server.name, n, returning) for returning in ROUNDS]
    holder = HubContainer(client, prefix)
    hub: HubStack | None = None
    try:
        if kind in ("swarm-docker", "swarm-multiuser-shared"):
            network = client.api.create_network(shared_network(prefix), driver="overlay", attachable=True)
            client.api.connect_container_to_network(holder.name, network["Id"])
        if kind == "swarm-docker":
            uid = holder.image_uid()
            for user in users:
                home = shared_homes(prefix) / user
                home.mkdir(parents=True, exist_ok=True)
                os.chown(home, uid, uid)
        hub = HubStack(
            workdir=workdir,
            prefix=prefix,
            users={u: [] for u in users},
            extra_config=swarm_hub_config(kind, prefix, n, server, holder, timeout, constraints),
            host=holder.address,
            launcher=holder.launcher(workdir),
        )
        # The proxy reaches the hub in their shared namespace; the servers reach it by the container's name.
        hub.extra_config += textwrap.dedent(
            f"""
            c.JupyterHub.hub_ip = "0.0.0.0"
            c.JupyterHub.hub_connect_ip = "127.0.0.1"
            c.Spawner.hub_connect_url = "http://{holder.name}:{hub.hub_port}"
            """
        )
        hub.start(timeout=90)
        wait_for_quiet(HUB_SETTLE_WAIT)
        proxy_pid_file = workdir / "proxy.pid"
        proxy_pids = [int(proxy_pid_file.read_text().strip())] if proxy_pid_file.exists() else []
        pids = {"hub": [hub.process.pid], "proxy": proxy_pids, "bench": [os.getpid()]}
        for result in results:
            if result.returning:
                wait_for_quiet(HUB_SETTLE_WAIT)
            swarm_hub_round(result, hub, users, client, prefix, server, pids, timeout)
            if result.error:
                break
    except Exception as e:
        results[0].error = results[0].error or repr(e)
    finally:
        failed = [r for r in results if r.error]
        if failed and hub is not None:
            (workdir / "failure.txt").write_text(f"{failed[0].error}\n\n{hub.log_tail(200)}")
        if hub is not None:
            hub.stop()
        holder.remove()
        remove_swarm_objects(client, prefix)
    if results[0].error and not results[1].error:
        results[1].error = "not measured: the new users' round failed"
    return results


def swarm_hub_round(
    result: Burst,
    hub: HubStack,
    users: list[str],
    client: docker.DockerClient,
    prefix: str,
    server: ServerKind,
    pids: dict[str, list[int]],
    timeout: float,
) -> None:
    api = client.api
    driver = HubDriver(hub, users)
    log_start = hub.log_path.stat().st_size
    meter = SwarmCpuMeter(client, prefix, pids)
    ensure_whole_swarm(client)
    since = time.time() - 1
    meter.start()
    try:
        result.ready = driver.run("POST", 201, lambda model: bool(model and model.get("ready")), timeout)
    except Exception as e:
        result.error = f"start: {e}"
    result.cpu = meter.stop()
    check_swarm_unchanged(result, api)
    timelines, placed = task_timelines(api, prefix, driver.last_t0, server.up_marker, since)
    result.notes["servers_per_node"] = node_names(api, placed)
    service_ids = {s["ID"] for s in services_of(api, prefix)}
    try:
        result.stopped = driver.run("DELETE", 204, lambda model: model is None, 120 + 5 * len(users))
        # SwarmSpawner's stop returns once the service is removed, before its task has stopped; ours and the floor
        # wait for that. The time until the last task is gone is the same measure for all three.
        gone = wait_until_gone(api, service_ids, STOP_GRACE_SECONDS + 60)
        result.notes["all_tasks_gone"] = round(gone - driver.last_t0, 3)
    except Exception as e:
        result.error = result.error or f"stop: {e}"
    left = [s["Spec"]["Name"] for s in services_of(api, prefix)]
    if left and not result.error:
        result.error = f"services left after stop: {left[:3]}"
    with hub.log_path.open("rb") as log_file:
        log_file.seek(log_start)
        result.phases = hub_phases(log_file.read().decode("utf-8", "replace"))
    for user, timeline in timelines.items():
        result.phases.setdefault(user, {}).update(timeline)


# -- clean-up -----------------------------------------------------------------------------------------------------


def node_engines(client: docker.DockerClient) -> Iterator[Callable[[list[str]], subprocess.CompletedProcess]]:
    """A way to run ``docker ARGS`` on each node: the host's engine (the manager), then each worker's."""
    yield lambda args: subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    for worker in worker_containers(client):
        yield lambda args, name=worker.name: subprocess.run(
            ["docker", "exec", name, "docker", *args], capture_output=True, text=True, timeout=120
        )


def remove_services_and_networks(client: docker.DockerClient, prefix: str, hub_container: str = "") -> None:
    """The services named ``prefix-*`` (waiting for their tasks) and the overlays named so (``hub_container``
    detached from them first)."""
    api = client.api
    services = services_of(api, prefix)
    for service in services:
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_service(service["ID"])
    with contextlib.suppress(TimeoutError):
        wait_until_gone(api, {s["ID"] for s in services}, 60)
    for network in api.networks():
        if network["Name"].startswith(f"{prefix}-") and network.get("Scope") == "swarm":
            if hub_container:
                with contextlib.suppress(docker.errors.APIError):
                    api.disconnect_container_from_network(hub_container, network["Id"], force=True)
            with contextlib.suppress(docker.errors.APIError):
                remove_network_when_free(api, network["Id"])


def remove_swarm_objects(client: docker.DockerClient, prefix: str) -> None:
    """Everything named ``prefix-*`` on the swarm: the hub's containers, services (waiting for their tasks),
    networks, volume records (configs), the volumes on every node and the shared homes; then on the host."""
    api = client.api
    try:
        if not client.info()["Swarm"].get("ControlAvailable"):
            return
    except docker.errors.APIError:
        return
    for container in client.containers.list(all=True, filters={"label": HUB_LABEL}):
        owner = container.labels.get(HUB_LABEL, "")
        if owner == prefix or owner.startswith(f"{prefix}-"):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
    remove_services_and_networks(client, prefix)
    for config in api.configs():
        if config["Spec"]["Name"].startswith(f"{prefix}-"):
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_config(config["ID"])
    for run_docker in node_engines(client):
        listed = run_docker(["volume", "ls", "-q", "--filter", f"name={prefix}-"]).stdout.split()
        ours = [v for v in listed if v.startswith(f"{prefix}-")]
        if ours:
            run_docker(["volume", "rm", "-f", *ours])
    for path in [shared_homes(prefix), *SHARED_ROOT.glob(f"{prefix}-*")]:
        shutil.rmtree(path, ignore_errors=True)
    remove_objects(client, prefix)
