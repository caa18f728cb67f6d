"""``multiuser-spawner doctor`` on a swarm: can every node run the hub's servers?

A manager cannot see a worker's images, nor tell whether packets cross hosts, so each check runs what a spawn
relies on, as Swarm services of one task pinned to a node (restart ``none``): one per node and image, which
Swarm rejects with ``No such image`` where the image is missing; a server and clients on different nodes on a new
attachable overlay; a task on another node than the hub's fetching the hub's API over an overlay the hub's
container joins. Everything made carries the project's labels and this run's label, and is removed afterwards,
also when a check fails or times out. Specs and verdicts are pure functions.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import names
from .docker_gateway import DockerGatewayError
from .doctor import FAIL, OK, SKIP, CheckResult
from .swarm import ENDED_STATES, SwarmGateway, latest_task, node_name, node_unavailable, task_failure, task_state
from .swarm_inventory import NotAManager, local_node, remove_service_and_wait

#: marks every object of one doctor run, so the run removes exactly what it made
LABEL_DOCTOR_RUN = f"{names.LABEL_PREFIX}.doctor-run"
PROBE_TIMEOUT = 90
CHECK_INTERVAL = 0.5
SERVER_ALIAS = "doctor-server"
SERVER_PORT = 8000
#: how long a client keeps trying (the server's task may start after the client's)
CLIENT_PATIENCE = 45
#: Swarm's words for an image a node does not have (it tries to pull it, which fails offline or without access)
MISSING_IMAGE_ERRORS = ("No such image", "pull access denied", "manifest unknown")

FETCH_SCRIPT = "\n".join(
    [
        "import sys, time, urllib.request",
        "deadline = time.monotonic() + float(sys.argv[2])",
        "while True:",
        "    try:",
        "        with urllib.request.urlopen(sys.argv[1], timeout=5) as r:",
        "            print(r.status); break",
        "    except Exception as e:",
        "        if time.monotonic() > deadline:",
        "            print(f'{type(e).__name__}: {e}'); sys.exit(1)",
        "        time.sleep(1)",
    ]
)
SERVER_SCRIPT = (
    f"import http.server as h; h.HTTPServer(('', {SERVER_PORT}), h.SimpleHTTPRequestHandler).serve_forever()"
)


@dataclass(frozen=True)
class SwarmDoctorOptions:
    #: the check's name ("image", "image of service db") -> the image every node must have
    images: Mapping[str, str]
    #: the hub's API as a server reaches it over an overlay ("" skips the check)
    hub_url: str
    hub_container: str
    prefix: str


@dataclass(frozen=True)
class Node:
    id: str
    name: str


# -- pure: specs and verdicts ---------------------------------------------------------------------------------------


def probe_labels(prefix: str, run: str) -> dict[str, str]:
    """The hub's labels with no user (never taken for a user's object by ``ls`` or ``gc``) and the run's."""
    owner = names.Owner(hub=prefix, user="", user_id="")
    return {**names.labels(names.ROLE_HELPER, owner), LABEL_DOCTOR_RUN: run}


def probe_service_spec(
    name: str,
    image: str,
    command: Sequence[str],
    node_id: str,
    labels: Mapping[str, str],
    network_id: str = "",
    aliases: Sequence[str] = (),
) -> dict[str, Any]:
    """One task pinned to one node, never restarted: it runs once and its end is the answer."""
    template: dict[str, Any] = {
        "ContainerSpec": {"Image": image, "Command": list(command), "Labels": dict(labels)},
        "RestartPolicy": {"Condition": "none"},
        "Placement": {"Constraints": [f"node.id=={node_id}"]},
    }
    if network_id:
        network: dict[str, Any] = {"Target": network_id}
        if aliases:
            network["Aliases"] = list(aliases)
        template["Networks"] = [network]
    return {
        "name": name,
        "labels": dict(labels),
        "mode": {"Replicated": {"Replicas": 1}},
        "endpoint_spec": {"Mode": "dnsrr"},
        "task_template": template,
    }


def overlay_config(name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {"name": name, "driver": "overlay", "attachable": True, "labels": dict(labels), "check_duplicate": True}


@dataclass(frozen=True)
class NodeSurvey:
    #: Ready and active: a task can be placed there
    usable: list[Node]
    #: not Ready (down, unknown): its users cannot start, a phrase each
    down: list[str]
    #: drained or paused by an admin: not checked, a phrase each
    set_aside: list[str]


def survey_nodes(nodes: Sequence[Mapping[str, Any]]) -> NodeSurvey:
    survey = NodeSurvey([], [], [])
    for node in sorted(nodes, key=lambda n: node_name(dict(n))):
        why = node_unavailable(dict(node))
        hostname = node_name(dict(node))
        if not why:
            survey.usable.append(Node(node["ID"], hostname))
        elif (node.get("Status") or {}).get("State") != "ready":
            survey.down.append(f"{hostname} {why}")
        else:
            survey.set_aside.append(f"{hostname} {why}")
    return survey


def judge_nodes(survey: NodeSurvey) -> CheckResult:
    if not survey.usable:
        why = "; ".join(survey.down + survey.set_aside)
        return CheckResult("nodes", FAIL, f"no node can take a task ({why}): no server can start")
    detail = f"{len(survey.usable)} node(s) ready: {', '.join(n.name for n in survey.usable)}"
    if survey.set_aside:
        detail += f"; not checked: {'; '.join(survey.set_aside)}"
    if survey.down:
        return CheckResult(
            "nodes",
            FAIL,
            f"{'; '.join(survey.down)}: users whose volumes live there cannot start until it is back "
            f"(docker node ls; {detail})",
        )
    return CheckResult("nodes", OK, detail)


def image_missing(task: Mapping[str, Any] | None) -> bool:
    error = ((task or {}).get("Status") or {}).get("Err") or ""
    return task_state(dict(task or {})) in ("rejected", "failed") and any(e in error for e in MISSING_IMAGE_ERRORS)


def image_present(task: Mapping[str, Any] | None) -> bool:
    """A container was made from the image (whatever its command then did)."""
    status = (task or {}).get("Status") or {}
    return status.get("State") == "complete" or bool((status.get("ContainerStatus") or {}).get("ContainerID"))


def nodes_missing(outcomes: Mapping[Node, Mapping[str, Any] | None]) -> list[Node]:
    return sorted((n for n, task in outcomes.items() if image_missing(task)), key=lambda n: n.name)


def judge_image(check: str, image: str, outcomes: Mapping[Node, Mapping[str, Any] | None]) -> CheckResult:
    """One image on every node: which nodes lack it, and how to bring it there."""
    missing = [n.name for n in nodes_missing(outcomes)]
    unclear = {
        n.name: task_failure(dict(task)) if task else f"no answer within {PROBE_TIMEOUT} s"
        for n, task in outcomes.items()
        if not image_missing(task) and not image_present(task)
    }
    if missing:
        where = ", ".join(missing)
        return CheckResult(
            check,
            FAIL,
            f"{image} is missing on node(s) {where}: every server placed there fails to start. Load it on each "
            f"(e.g. docker save {image} | ssh NODE docker load) or keep servers off those nodes with a placement "
            "constraint",
        )
    if unclear:
        detail = "; ".join(f"{node}: {why}" for node, why in sorted(unclear.items()))
        return CheckResult(check, FAIL, f"could not tell whether {image} is on every node ({detail})")
    return CheckResult(check, OK, f"{image} is on all {len(outcomes)} node(s)")


def _ended(task: Mapping[str, Any] | None) -> bool:
    return task_state(dict(task or {})) in ENDED_STATES


def judge_overlay(
    server: Node,
    outcomes: Mapping[Node, tuple[Mapping[str, Any] | None, str]],
    server_task: Mapping[str, Any] | None = None,
) -> CheckResult:
    """Clients on other nodes fetched a page from a server on ``server`` over a new overlay; ``server_task`` is the
    server's task as it was afterwards (a server that never ran says nothing about the traffic)."""
    name = "overlay between nodes"
    server_failure = task_failure(dict(server_task)) if server_task else "no task"
    if server_failure and not all(_completed(task) for task, _ in outcomes.values()):
        return CheckResult(
            name,
            FAIL,
            f"the probe server on node {server.name} did not run ({server_failure}), so traffic between nodes was "
            "not tested: a server placed there would fail the same way",
        )
    failed = {n.name: _why_fetch_failed(task, output) for n, (task, output) in outcomes.items() if not _completed(task)}
    if failed:
        detail = "; ".join(f"from {node}: {why}" for node, why in sorted(failed.items()))
        return CheckResult(
            name,
            FAIL,
            f"tasks could not reach a task on node {server.name} over an overlay network ({detail}). A user's "
            "notebook and services on different nodes could not talk: open 4789/udp (VXLAN) and 7946/tcp+udp "
            "between the nodes (docs/swarm.md, Ports between hosts)",
        )
    clients = ", ".join(sorted(n.name for n in outcomes))
    return CheckResult(name, OK, f"tasks on {clients} reached a task on {server.name} over an overlay")


def judge_hub(url: str, node: Node, task: Mapping[str, Any] | None, output: str) -> CheckResult:
    name = "hub reachable"
    if _completed(task):
        return CheckResult(name, OK, f"{url} answered HTTP {_last_line(output)} to a task on node {node.name}")
    return CheckResult(
        name,
        FAIL,
        f"{url} did not answer a task on node {node.name} over an overlay the hub's container joined "
        f"({_why_fetch_failed(task, output)}): servers there cannot report to the hub. Check that the hub listens "
        "on all its addresses (c.JupyterHub.hub_ip = '0.0.0.0'), that hub_container_name names its container, and "
        "the ports between hosts",
    )


def _completed(task: Mapping[str, Any] | None) -> bool:
    return task_state(dict(task or {})) == "complete"


def _why_fetch_failed(task: Mapping[str, Any] | None, output: str) -> str:
    if task is None:
        return f"no answer within {PROBE_TIMEOUT} s"
    return _last_line(output) if output.strip() else task_failure(dict(task)) or task_state(dict(task))


def _last_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


# -- running the probes ---------------------------------------------------------------------------------------------


class Probes:
    """Creates this run's services and overlays, waits for their tasks, and removes all of it."""

    def __init__(self, gateway: SwarmGateway, prefix: str, hub_container: str):
        self.gateway = gateway
        self.run = secrets.token_hex(4)
        self.base = f"{prefix}-doctor_{self.run}"
        self.labels = probe_labels(prefix, self.run)
        self.hub_container = hub_container
        self._count = 0

    def name(self, what: str) -> str:
        self._count += 1
        return f"{self.base}_{what}{self._count}"

    async def network(self) -> str:
        name = self.name("net")
        await self.gateway.ensure_network(overlay_config(name, self.labels))
        found = await self.gateway.inspect_network(name)
        if found is None:
            raise DockerGatewayError(f"the overlay {name} vanished right after its creation")
        return found["Id"]

    async def start(self, what: str, image: str, command: Sequence[str], node: Node, **network: Any) -> str:
        spec = probe_service_spec(self.name(what), image, command, node.id, self.labels, **network)
        return await self.gateway.create_service(spec)

    async def outcome(self, service_id: str) -> dict[str, Any] | None:
        """The service's task once it has ended; None when that takes longer than :data:`PROBE_TIMEOUT`."""
        deadline = time.monotonic() + PROBE_TIMEOUT
        while time.monotonic() < deadline:
            task = latest_task(await self.gateway.tasks_of(service_id))
            if _ended(task):
                return task
            await asyncio.sleep(CHECK_INTERVAL)
        return None

    async def output(self, service_id: str) -> str:
        return await self.gateway.service_logs_tail(service_id, 5)

    async def remove_all(self) -> list[str]:
        """Every service and overlay of this run (found by its label, also those whose creation timed out), the
        services first and until their tasks are gone; returns what could not be removed."""
        left: list[str] = []
        run_label = [f"{LABEL_DOCTOR_RUN}={self.run}"]
        try:
            services = await self.gateway.list_services(run_label)
            outcomes = await asyncio.gather(
                *(remove_service_and_wait(self.gateway, s["ID"]) for s in services), return_exceptions=True
            )
            left += [f"service {s['Spec']['Name']}: {o}" for s, o in zip(services, outcomes, strict=True) if o]
            for network in await self.gateway.list_networks(run_label):
                try:
                    await self._remove_network(network["Id"])
                except DockerGatewayError as e:
                    left.append(f"network {network['Name']}: {e}")
        except DockerGatewayError as e:  # the engine went away: say so rather than hide the checks' results
            left.append(f"the probes (listing them failed: {e})")
        return left

    async def _remove_network(self, network_id: str) -> None:
        if self.hub_container:
            await self.gateway.disconnect_network(network_id, self.hub_container)
        deadline = time.monotonic() + 60
        while await self.gateway.inspect_network(network_id) is not None:
            try:
                await self.gateway.remove_network(network_id)
            except DockerGatewayError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(CHECK_INTERVAL)


async def image_outcomes(probes: Probes, image: str, nodes: Sequence[Node]) -> dict[Node, dict | None]:
    """Each node's answer to a task of ``image`` (running ``true``): rejected with Swarm's reason, or made."""

    async def on(node: Node) -> dict | None:
        try:
            return await probes.outcome(await probes.start("img", image, ["true"], node))
        except DockerGatewayError as e:
            return {"Status": {"State": "not created", "Err": str(e)}}

    outcomes = await asyncio.gather(*(on(node) for node in nodes))
    return dict(zip(nodes, outcomes, strict=True))


async def check_overlay(probes: Probes, image: str, nodes: Sequence[Node], local: str) -> CheckResult:
    """A server on one node (a worker when there is one) and a client on every other node."""
    if len(nodes) < 2:
        return CheckResult("overlay between nodes", SKIP, "fewer than two nodes can take tasks: nothing crosses hosts")
    server = next((n for n in nodes if n.id != local), nodes[0])
    network_id = await probes.network()
    server_id = await probes.start(
        "srv", image, ["python3", "-c", SERVER_SCRIPT], server, network_id=network_id, aliases=[SERVER_ALIAS]
    )
    url = f"http://{SERVER_ALIAS}:{SERVER_PORT}/"
    clients = [n for n in nodes if n != server]

    async def client(node: Node) -> tuple[dict | None, str]:
        service_id = await probes.start(
            "cli", image, ["python3", "-c", FETCH_SCRIPT, url, str(CLIENT_PATIENCE)], node, network_id=network_id
        )
        task = await probes.outcome(service_id)
        return task, await probes.output(service_id)

    outcomes = await asyncio.gather(*(client(node) for node in clients))
    server_task = latest_task(await probes.gateway.tasks_of(server_id))
    return judge_overlay(server, dict(zip(clients, outcomes, strict=True)), server_task)


async def check_hub(probes: Probes, image: str, url: str, nodes: Sequence[Node], local: str) -> CheckResult:
    """From a task on another node than the hub's, over an overlay the hub's container joins, fetch the hub's API."""
    name = "hub reachable"
    container = probes.hub_container
    if not container:
        return CheckResult(name, SKIP, "no hub container is configured (hub_container_name, or --hub-container)")
    if await probes.gateway.inspect_container(container) is None:
        return CheckResult(
            name,
            FAIL,
            f"the hub's container {container} is not on this engine: run doctor on the manager that runs the hub, "
            "or give its name with --hub-container",
        )
    others = [n for n in nodes if n.id != local]
    if not others:
        return CheckResult(name, SKIP, "no other node than the hub's can take tasks")
    network_id = await probes.network()
    await probes.gateway.connect_network(network_id, container)
    service_id = await probes.start(
        "hub", image, ["python3", "-c", FETCH_SCRIPT, url, str(CLIENT_PATIENCE)], others[0], network_id=network_id
    )
    task = await probes.outcome(service_id)
    return judge_hub(url, others[0], task, await probes.output(service_id))


async def _guarded(name: str, check: Awaitable[CheckResult]) -> CheckResult:
    try:
        return await check
    except DockerGatewayError as e:
        return CheckResult(name, FAIL, f"could not run the probe: {e}")


async def _check_images(
    probes: Probes, images: Mapping[str, str], nodes: Sequence[Node]
) -> tuple[list[CheckResult], list[Node]]:
    """One result per image, and the nodes that lack the first (the notebook's) image."""
    outcomes = await asyncio.gather(*(image_outcomes(probes, image, nodes) for image in images.values()))
    results = [judge_image(check, image, found) for (check, image), found in zip(images.items(), outcomes, strict=True)]
    return results, nodes_missing(outcomes[0]) if outcomes else []


async def run_checks(gateway: SwarmGateway, options: SwarmDoctorOptions) -> list[CheckResult]:
    try:
        local, hostname = await local_node(gateway)
    except NotAManager as e:
        return [CheckResult("swarm manager", FAIL, str(e))]
    info = await gateway.info()
    results = [CheckResult("swarm manager", OK, f"{hostname}, Docker {info.get('ServerVersion', '?')}")]
    survey = survey_nodes(await gateway.nodes())
    results.append(judge_nodes(survey))
    nodes = survey.usable
    if not nodes or not options.images:
        return results
    probes = Probes(gateway, options.prefix, options.hub_container)
    try:
        try:
            images, lacking = await _check_images(probes, options.images, nodes)
        except DockerGatewayError as e:
            images, lacking = [CheckResult("images", FAIL, f"could not run the probes: {e}")], []
        results += images
        notebook = next(iter(options.images.values()))
        # the traffic probes run the notebook's image: only where it is
        able = [n for n in nodes if n not in lacking]
        results.append(await _guarded("overlay between nodes", check_overlay(probes, notebook, able, local)))
        if options.hub_url:
            results.append(await _guarded("hub reachable", check_hub(probes, notebook, options.hub_url, able, local)))
        else:
            results.append(
                CheckResult("hub reachable", SKIP, "give --hub-connect-url (the hub's API as servers see it)")
            )
    finally:
        left = await probes.remove_all()
        if left:
            results.append(
                CheckResult(
                    "clean up",
                    FAIL,
                    f"could not remove {'; '.join(left)}: remove them by hand "
                    f"(docker service rm / docker network rm; label {LABEL_DOCTOR_RUN}={probes.run})",
                )
            )
    return results
