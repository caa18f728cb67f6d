"""``multiuser-spawner doctor``: is this Docker host ready for the spawner?

Each check does what a spawn relies on, for real: it runs short-lived containers from the configured image with
the notebook's hardening, so "ok" means the kernel enforced the limit and the hub answered from a user network,
not merely that a setting is on. The container specs and the verdicts are pure functions.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass

from . import names, network
from .container_spec import ContainerSpec, security_host_config
from .docker_gateway import DockerGateway
from .plan import Security, network_plan

OK = "ok"
FAIL = "FAIL"
SKIP = "skip"

MEMORY_LIMIT = 64 * 2**20
# Above the limit even counting swap (which is disabled for the probe): only a kernel kill stops it.
ALLOCATION = 200 * 2**20
# Multiplying a bytes object writes every page; a bare ``bytearray(n)`` may stay untouched zero pages.
ALLOCATE_SCRIPT = f"x = b'1' * {ALLOCATION}"
OOM_EXIT_CODE = 137  # 128 + SIGKILL

CPU_PERIOD = 100_000
CPU_QUOTA = 50_000
# cgroup v2 has one file, v1 two.
CPU_CGROUP_SCRIPT = (
    "cat /sys/fs/cgroup/cpu.max 2>/dev/null"
    " || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us"
)

HUB_PROBE_SCRIPT = "\n".join(
    [
        "import sys, urllib.request",
        "with urllib.request.urlopen(sys.argv[1], timeout=10) as r:",
        "    print(r.status)",
    ]
)

PROBE_TIMEOUT = 60


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == FAIL


@dataclass(frozen=True)
class DoctorOptions:
    image: str
    #: each service's key -> its image (empty: no services to check)
    service_images: dict[str, str]
    hub_connect_url: str
    hub_container: str
    prefix: str


def probe_names(prefix: str, token: str | None = None) -> dict[str, str]:
    """Names of the probe objects. ``_`` never occurs in a user's slug, so these can never be a user's objects,
    and they start with ``{prefix}-`` like everything else of this hub."""
    base = f"{prefix}-doctor_{token or secrets.token_hex(4)}"
    return {key: f"{base}_{key}" for key in ("memory", "cpu", "hub", "net")}


def _probe_spec(name: str, image: str, command: list[str], host_config: dict, network_name: str = "") -> ContainerSpec:
    create = {"name": name, "image": image, "command": command}
    config = {**security_host_config(Security()), **host_config}
    if network_name:
        config["network_mode"] = network_name
    else:
        create["network_disabled"] = True
        config["network_mode"] = "none"
    return ContainerSpec(create=create, host_config=config, networks={})


def memory_probe_spec(name: str, image: str) -> ContainerSpec:
    limits = {"mem_limit": MEMORY_LIMIT, "memswap_limit": MEMORY_LIMIT}
    return _probe_spec(name, image, ["python3", "-c", ALLOCATE_SCRIPT], limits)


def cpu_probe_spec(name: str, image: str) -> ContainerSpec:
    limits = {"cpu_period": CPU_PERIOD, "cpu_quota": CPU_QUOTA}
    return _probe_spec(name, image, ["sh", "-c", CPU_CGROUP_SCRIPT], limits)


def hub_probe_spec(name: str, image: str, network_name: str, url: str) -> ContainerSpec:
    return _probe_spec(name, image, ["python3", "-c", HUB_PROBE_SCRIPT, url], {}, network_name)


def _last_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


def judge_memory(exit_code: int, output: str) -> CheckResult:
    name = "memory limit"
    mib = f"{ALLOCATION // 2**20} MiB under a {MEMORY_LIMIT // 2**20} MiB limit"
    if exit_code == OOM_EXIT_CODE:
        return CheckResult(name, OK, f"allocating {mib} was killed (exit {exit_code})")
    if exit_code == 0:
        return CheckResult(name, FAIL, f"allocating {mib} succeeded: the kernel does not enforce memory limits")
    return CheckResult(name, FAIL, f"the probe exited {exit_code}, not {OOM_EXIT_CODE}: {_last_line(output)}")


def judge_cpu(exit_code: int, output: str) -> CheckResult:
    name = "cpu limit"
    # cgroup v2 prints "quota period" on one line, v1 the two files one per line: the same words either way.
    expected = [str(CPU_QUOTA), str(CPU_PERIOD)]
    if exit_code == 0 and output.split()[:2] == expected:
        return CheckResult(name, OK, f"quota {CPU_QUOTA}/{CPU_PERIOD} us is in the container's cgroup")
    return CheckResult(
        name, FAIL, f"expected quota {' '.join(expected)} in the cgroup, got {output.strip()!r} (exit {exit_code})"
    )


def judge_hub(exit_code: int, output: str, url: str) -> CheckResult:
    name = "hub reachable"
    if exit_code == 0:
        return CheckResult(name, OK, f"{url} answered HTTP {_last_line(output)} from a fresh user network")
    return CheckResult(name, FAIL, f"{url} from a user network: {_last_line(output)}")


async def check_engine(gateway: DockerGateway) -> CheckResult:
    try:
        info = await gateway.info()
    except Exception as e:  # any failure here means the engine cannot be used
        return CheckResult("docker engine", FAIL, str(e))
    detail = f"Docker {info.get('ServerVersion', '?')}, API {gateway.client.api_version}"
    if info.get("CgroupVersion"):
        detail += f", cgroup v{info['CgroupVersion']}"
    return CheckResult("docker engine", OK, detail)


async def check_image(gateway: DockerGateway, name: str, image: str) -> CheckResult:
    info = await gateway.inspect_image(image)
    if info is None:
        return CheckResult(name, FAIL, f"{image} is not on this Docker host: build or pull it")
    return CheckResult(name, OK, f"{image} ({info.get('Id', '?')[:19]}, {info.get('Size', 0) / 1e6:.0f} MB)")


async def _run_probe(gateway: DockerGateway, spec: ContainerSpec) -> tuple[int, str]:
    return await gateway.run_to_completion(spec, PROBE_TIMEOUT)


async def check_memory(gateway: DockerGateway, image: str, name: str) -> CheckResult:
    try:
        return judge_memory(*await _run_probe(gateway, memory_probe_spec(name, image)))
    except Exception as e:
        return CheckResult("memory limit", FAIL, f"could not run the probe: {e}")


async def check_cpu(gateway: DockerGateway, image: str, name: str) -> CheckResult:
    try:
        return judge_cpu(*await _run_probe(gateway, cpu_probe_spec(name, image)))
    except Exception as e:
        return CheckResult("cpu limit", FAIL, f"could not run the probe: {e}")


async def check_hub(
    gateway: DockerGateway,
    image: str,
    url: str,
    container: str,
    network_name: str,
    hub_container: str,
    hub: str,
) -> CheckResult:
    """From a container on a new user network, made the way the spawner makes them, ask the hub's API."""
    try:
        # labelled with the hub but no user: never taken for a user's object
        owner = names.Owner(hub=hub, user="", user_id="")
        await network.ensure_user_network(gateway, network_plan(network_name, owner))
        await network.join_hub(gateway, network_name, hub_container)
        try:
            return judge_hub(*await _run_probe(gateway, hub_probe_spec(container, image, network_name, url)), url)
        finally:
            await network.remove_user_network(gateway, network_name, hub_container)
    except Exception as e:
        return CheckResult("hub reachable", FAIL, f"could not run the probe: {e}")


async def run_checks(gateway: DockerGateway, options: DoctorOptions) -> list[CheckResult]:
    engine = await check_engine(gateway)
    if engine.failed:
        return [engine]
    results = [engine, await check_image(gateway, "image", options.image)]
    if not options.service_images:
        results.append(CheckResult("service images", SKIP, "no services are configured"))
    for key, image in sorted(options.service_images.items()):
        results.append(await check_image(gateway, f"image of service {key}", image))
    if results[1].failed:
        reason = f"needs the image {options.image}"
        return results + [CheckResult(n, SKIP, reason) for n in ("memory limit", "cpu limit", "hub reachable")]
    return results + await _run_probes(gateway, options)


async def _run_probes(gateway: DockerGateway, options: DoctorOptions) -> list[CheckResult]:
    probe = probe_names(options.prefix)
    checks = [check_memory(gateway, options.image, probe["memory"]), check_cpu(gateway, options.image, probe["cpu"])]
    if options.hub_connect_url:
        checks.append(
            check_hub(
                gateway,
                options.image,
                options.hub_connect_url,
                probe["hub"],
                probe["net"],
                options.hub_container,
                options.prefix,
            )
        )
    results = list(await asyncio.gather(*checks))
    if not options.hub_connect_url:
        results.append(
            CheckResult("hub reachable", SKIP, "give --hub-connect-url (the hub's API as containers see it)")
        )
    return results
