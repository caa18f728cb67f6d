"""``multiuser-spawner``: the admin's command line.

- ``ls``: the project's containers, networks and volumes per user and server, with volume sizes;
- ``gc``: remove what no running server needs (a dry run unless ``--yes``);
- ``doctor``: check that the Docker host can run the spawner;

On a hub whose spawner is the Swarm spawner (its config's ``c.JupyterHub.spawner_class``, or ``--swarm``) ``ls``,
``gc`` and ``doctor`` talk to a swarm manager about services, overlays and the volumes on each node
(:mod:`.swarm_inventory`, :mod:`.swarm_doctor`).
- ``prepare``: make a class's volumes before its first spawn;
- ``top``: live CPU, memory and volume use per user and server (in :mod:`.top`).

Argument parsing and output live here; the decisions live in :mod:`.inventory`, :mod:`.hub_api` and
:mod:`.doctor`, the Docker calls in :mod:`.docker_gateway`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from traitlets.config import Config, PyFileConfigLoader

from . import (
    cleanup,
    doctor,
    hub_api,
    inventory,
    names,
    prepare,
    services,
    stop_notes,
    swarm_doctor,
    swarm_inventory,
    top,
)
from .docker_gateway import DockerGateway, DockerGatewayError
from .swarm import SwarmGateway

EXIT_OK = 0
EXIT_PROBLEM = 1  # a check failed, or something could not be removed
EXIT_ERROR = 2  # the command could not run: bad arguments, Docker or the hub unreachable

DOCKER_CONCURRENCY = 4


class CLIError(RuntimeError):
    """The command cannot run; the message says why and what to do."""


# -- the hub's configuration ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HubSettings:
    """The few settings of the hub the CLI needs, from its config file or the spawner's defaults."""

    prefix: str
    templates: names.NameTemplates
    image: str
    #: each configured service's key -> its image (the deprecated database_enabled's ``db`` included)
    service_images: dict[str, str]
    hub_container: str
    #: the hub's spawner is the Swarm spawner: its objects are services, overlays and volumes on several nodes
    swarm: bool = False
    #: the hub's URL as servers reach it (``c.Spawner.hub_connect_url``); "" when not configured
    hub_connect_url: str = ""
    #: the hub's API port (``c.JupyterHub.hub_port``)
    hub_port: int = 8081


def load_config(path: str) -> Config:
    """Load ``jupyterhub_config.py`` the way the hub does (it is Python: it runs)."""
    file = Path(path)
    if not file.is_file():
        raise CLIError(f"config file {path} does not exist")
    try:
        return PyFileConfigLoader(file.name, path=str(file.parent.resolve())).load_config()
    except Exception as e:
        raise CLIError(f"cannot load config file {path}: {e}") from e


def configured(config: Config, trait: str, default: Any, swarm: bool = False) -> Any:
    """The value ``config`` gives the spawner's ``trait``: the most derived class's section wins, as in traitlets
    (so ``c.MultiUserSpawner.image`` beats ``c.DockerSpawner.image``, and on a swarm
    ``c.MultiUserSwarmSpawner.image`` beats both). No spawner is built: that needs a hub user."""
    from .spawner import MultiUserSpawner
    from .swarm_spawner import MultiUserSwarmSpawner

    value = default
    spawner = MultiUserSwarmSpawner if swarm else MultiUserSpawner
    for section in spawner.section_names():
        if section in config and trait in config[section]:
            value = config[section][trait]
    return value


def on_swarm(config: Config) -> bool:
    """Whether the hub's ``c.JupyterHub.spawner_class`` is the Swarm spawner."""
    hub = config.get("JupyterHub") or {}
    return "spawner_class" in hub and swarm_inventory.is_swarm_spawner(hub["spawner_class"])


def hub_settings(config: Config, swarm: bool = False) -> HubSettings:
    """The settings of the hub ``config`` describes; on a swarm when its spawner class says so, or ``swarm``."""
    from .spawner import LEGACY_DATABASE_SETTINGS, MultiUserSpawner

    swarm = swarm or on_swarm(config)
    traits = MultiUserSpawner.class_traits()

    def setting(name: str) -> Any:
        return configured(config, name, traits[name].default(), swarm)

    defaults = names.NameTemplates()
    templates = names.NameTemplates(
        # The spawner overrides DockerSpawner's name_template default, so the trait's own default would be wrong.
        container=configured(config, "name_template", defaults.container, swarm),
        home_volume=setting("home_volume_name_template"),
        network=setting("network_name_template"),
        service_container=setting("service_container_name_template"),
        service_volume=setting("service_volume_name_template"),
    )
    raw_services = dict(setting("services"))
    if setting("database_enabled"):
        legacy = {name: setting(name) for name in LEGACY_DATABASE_SETTINGS}
        raw_services.setdefault(names.LEGACY_DATABASE_SERVICE, services.legacy_database_service(legacy))
    try:
        service_images = {spec.key: spec.image for spec in services.parse_services(raw_services)}
    except services.ServiceConfigError as e:
        raise CLIError(str(e)) from None
    return HubSettings(
        prefix=setting("prefix"),
        templates=templates,
        image=setting("image"),
        service_images=service_images,
        hub_container=setting("hub_container_name"),
        swarm=swarm,
        hub_connect_url=setting("hub_connect_url") or "",
        hub_port=int((config.get("JupyterHub") or {}).get("hub_port", 8081)),
    )


def settings_from_args(args: argparse.Namespace) -> HubSettings:
    settings = hub_settings(load_config(args.config) if args.config else Config(), getattr(args, "swarm", False))
    if args.prefix:
        settings = dataclasses.replace(settings, prefix=args.prefix)
    try:
        names.validate_prefix(settings.prefix)
    except ValueError as e:
        raise CLIError(str(e)) from None
    return settings


def connect_docker() -> DockerGateway:
    import docker.errors

    try:
        # DOCKER_HOST and friends are honoured, as by the docker command.
        return DockerGateway.connect({}, concurrency=DOCKER_CONCURRENCY, view_max_age=5)
    except docker.errors.DockerException as e:
        raise CLIError(f"cannot reach the Docker engine: {e}") from e


def connect_swarm() -> SwarmGateway:
    import docker.errors

    try:
        return SwarmGateway.connect({}, concurrency=DOCKER_CONCURRENCY, view_max_age=5)
    except docker.errors.DockerException as e:
        raise CLIError(f"cannot reach the Docker engine: {e}") from e


# -- output -----------------------------------------------------------------------------------------------------


def format_table(rows: Iterable[Sequence[str]], headers: Sequence[str] | None = None) -> str:
    """Left-aligned columns two spaces apart, without trailing spaces."""
    all_rows = ([list(headers)] if headers else []) + [list(row) for row in rows]
    if not all_rows:
        return ""
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(all_rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in all_rows]
    return "\n".join(lines)


def format_size(size: int | None) -> str:
    """Decimal units, as ``docker system df`` shows them."""
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _cell(value: str) -> str:
    # An empty user or server (the default server, a user-wide volume) would leave a hole in the columns.
    return value or "-"


def ls_rows(
    resources: Iterable[inventory.Resource], with_sizes: bool = True, with_nodes: bool = False
) -> list[list[str]]:
    """The rows of ``ls``; ``with_nodes`` (on a swarm) adds the node a service runs on or a volume lives on."""
    rows = []
    for r in resources:
        row = [_cell(r.user), _cell(r.server), r.kind, _cell(f"{r.role} {r.service}".strip()), r.name]
        if with_nodes:
            row.append(_node_cell(r))
        row.append(_state_cell(r))
        row.append(format_size(r.size) if with_sizes and r.kind == inventory.KIND_VOLUME else "")
        rows.append(row)
    return rows


def _node_cell(resource: inventory.Resource) -> str:
    # A network spans the nodes; a volume without a node was never mounted, or is shared.
    if resource.kind == inventory.KIND_NETWORK:
        return ""
    return _cell(resource.node)


def _state_cell(resource: inventory.Resource) -> str:
    if resource.kind not in inventory.RUNNING_KINDS:
        return ""
    return f"{resource.state}: {resource.note}" if resource.note else resource.state


LS_HEADERS = ("USER", "SERVER", "KIND", "ROLE", "NAME", "STATE", "SIZE")
SWARM_LS_HEADERS = ("USER", "SERVER", "KIND", "ROLE", "NAME", "NODE", "STATE", "SIZE")


def ls_summary(resources: Sequence[inventory.Resource]) -> str:
    running_kind = next((r.kind for r in resources if r.kind in inventory.RUNNING_KINDS), inventory.KIND_CONTAINER)
    workloads = [r for r in resources if r.kind in inventory.RUNNING_KINDS]
    volumes = [r for r in resources if r.kind == inventory.KIND_VOLUME]
    networks = len(resources) - len(workloads) - len(volumes)
    running = sum(1 for r in workloads if r.state == "running")
    known = [r.size for r in volumes if r.size is not None]
    size = f" using {format_size(sum(known))}" if known else ""
    users = len({r.user for r in resources})
    return (
        f"{users} user(s): {len(workloads)} {running_kind}(s) ({running} running), {networks} network(s), "
        f"{len(volumes)} volume(s){size}{_per_node(volumes)}"
    )


def _per_node(volumes: Sequence[inventory.Resource]) -> str:
    """On a swarm: how many volumes each node holds."""
    counts: dict[str, int] = {}
    for volume in volumes:
        if volume.node:
            counts[volume.node] = counts.get(volume.node, 0) + 1
    if not counts:
        return ""
    return " (" + ", ".join(f"{count} on {node}" for node, count in sorted(counts.items())) + ")"


def gc_rows(orphans: Iterable[inventory.Orphan], with_nodes: bool = False) -> list[list[str]]:
    rows = []
    for o in orphans:
        r = o.resource
        row = [r.kind, r.name, _cell(r.user), _cell(r.server)]
        if with_nodes:
            row.append(_node_cell(r))
        rows.append([*row, o.reason])
    return rows


GC_HEADERS = ("KIND", "NAME", "USER", "SERVER", "REASON")
SWARM_GC_HEADERS = ("KIND", "NAME", "USER", "SERVER", "NODE", "REASON")


def doctor_rows(results: Iterable[doctor.CheckResult]) -> list[list[str]]:
    return [[r.status, r.name, r.detail] for r in results]


# -- commands ---------------------------------------------------------------------------------------------------


async def list_objects(settings: HubSettings, with_sizes: bool) -> tuple[DockerGateway, list[inventory.Resource]]:
    """The project's objects on this engine, or on a swarm the services, overlays and volume records."""
    if settings.swarm:
        swarm = connect_swarm()
        return swarm, await swarm_inventory.list_resources(swarm, with_sizes=with_sizes)
    gateway = connect_docker()
    return gateway, await cleanup.list_resources(gateway, with_sizes=with_sizes)


async def run_ls(args: argparse.Namespace, out: TextIO) -> int:
    settings = settings_from_args(args)
    gateway, resources = await list_objects(settings, with_sizes=not args.no_sizes)
    if not args.all:
        resources = inventory.of_hub(resources, settings.prefix, settings.templates)
    if not settings.swarm:
        resources = await stop_notes.annotate_containers(gateway, resources)
    if args.json:
        json.dump(inventory.as_json(resources), out, indent=2)
        out.write("\n")
        return EXIT_OK
    if not resources:
        engine = "swarm" if settings.swarm else "Docker engine"
        scope = f"on this {engine}" if args.all else f"of the hub with prefix {settings.prefix!r}"
        print(f"No objects {scope}.", file=out)
        return EXIT_OK
    headers = SWARM_LS_HEADERS if settings.swarm else LS_HEADERS
    print(format_table(ls_rows(resources, not args.no_sizes, settings.swarm), headers), file=out)
    print(f"\n{ls_summary(resources)}", file=out)
    return EXIT_OK


async def run_gc(args: argparse.Namespace, out: TextIO) -> int:
    settings = settings_from_args(args)
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if not token:
        raise CLIError(
            f"set JUPYTERHUB_API_TOKEN to a hub API token with the scopes {', '.join(hub_api.REQUIRED_SCOPES)}"
        )
    client = hub_api.HubClient(args.hub_url, token)
    # Docker is listed before the hub is asked: a server that starts in between has no container in the list yet,
    # so it cannot be taken for an orphan.
    gateway, listed = await list_objects(settings, with_sizes=False)
    resources = inventory.of_hub(listed, settings.prefix, settings.templates)
    try:
        state = await asyncio.to_thread(client.state, args.volumes_of_deleted_users)
    except hub_api.HubAPIError as e:
        raise CLIError(f"{e}; nothing was removed") from e
    orphans = inventory.find_orphans(resources, state)
    if state.names is not None:
        print_unsure_volumes(inventory.unsure_volumes(resources, state.names), out)
    if not orphans:
        print(f"No orphans among {len(resources)} object(s) of the hub with prefix {settings.prefix!r}.", file=out)
        return EXIT_OK
    if not args.yes:
        print("Would remove (dry run; add --yes to remove):", file=out)
        headers = SWARM_GC_HEADERS if settings.swarm else GC_HEADERS
        print(format_table(gc_rows(orphans, settings.swarm), headers), file=out)
        return EXIT_OK
    hub_container = args.hub_container if args.hub_container is not None else settings.hub_container
    if isinstance(gateway, SwarmGateway):
        # the notebook image runs the one-shot tasks that remove volumes on their nodes, as when the hub deletes a user
        report, elsewhere = await swarm_inventory.remove_resources(
            gateway, [o.resource for o in orphans], hub_container, job_image=settings.image
        )
        for sentence in elsewhere:
            print(f"left    {sentence}", file=out)
        return print_removal(report, out)
    report = await cleanup.remove_resources(
        gateway, [o.resource for o in orphans], hub_container, stop_timeout=args.stop_timeout
    )
    return print_removal(report, out)


def print_unsure_volumes(volumes: Sequence[inventory.Resource], out: TextIO) -> None:
    """Volumes of earlier releases whose user name is gone: deleted or renamed, gc cannot tell, so it keeps them."""
    if not volumes:
        return
    print(
        "Kept (made before user ids were recorded; their user was deleted or renamed, which gc cannot tell):",
        file=out,
    )
    print(format_table([[v.name, v.user] for v in volumes], ("VOLUME", "USER")), file=out)
    print("Remove one by hand (docker volume rm NAME) once its user is known to be gone.\n", file=out)


def print_removal(report: cleanup.RemovalReport, out: TextIO) -> int:
    for removed in report.removed:
        print(f"removed {removed}", file=out)
    for failure in report.failed:
        print(f"FAILED  {failure}", file=out)
    return EXIT_PROBLEM if report.failed else EXIT_OK


def doctor_service_images(settings: HubSettings, given: Sequence[str] | None) -> dict[str, str]:
    service_images = dict(settings.service_images)
    for one in given or []:
        key, _, image = one.partition("=")
        if not image:
            raise CLIError(f"--service-image takes NAME=IMAGE, not {one!r}")
        service_images[key] = image
    return service_images


def swarm_hub_url(settings: HubSettings, hub_container: str, given: str | None) -> str:
    """The hub's API as a server on an overlay reaches it: ``--hub-connect-url``, else the configured
    ``hub_connect_url``, else the hub's container by name at the hub's port ("" without a hub container)."""
    if given:
        return given
    if settings.hub_connect_url:
        return settings.hub_connect_url.rstrip("/") + "/hub/api"
    return f"http://{hub_container}:{settings.hub_port}/hub/api" if hub_container else ""


async def run_swarm_doctor(args: argparse.Namespace, settings: HubSettings, out: TextIO) -> int:
    hub_container = args.hub_container if args.hub_container is not None else settings.hub_container
    images = {"image": args.image or settings.image}
    for key, image in sorted(doctor_service_images(settings, args.service_image).items()):
        images[f"image of service {key}"] = image
    options = swarm_doctor.SwarmDoctorOptions(
        images=images,
        hub_url=swarm_hub_url(settings, hub_container, args.hub_connect_url),
        hub_container=hub_container,
        prefix=settings.prefix,
    )
    return report_checks(await checks_on(connect_swarm, swarm_doctor.run_checks, options), out)


async def run_doctor(args: argparse.Namespace, out: TextIO) -> int:
    settings = settings_from_args(args)
    if settings.swarm:
        return await run_swarm_doctor(args, settings, out)
    service_images = doctor_service_images(settings, args.service_image)
    options = doctor.DoctorOptions(
        image=args.image or settings.image,
        service_images=service_images,
        hub_connect_url=args.hub_connect_url or "",
        hub_container=args.hub_container if args.hub_container is not None else settings.hub_container,
        prefix=settings.prefix,
    )
    return report_checks(await checks_on(connect_docker, doctor.run_checks, options), out)


async def checks_on(connect: Callable[[], Any], run_checks: Callable[..., Any], options: Any) -> list:
    """The doctor's results on the engine ``connect`` reaches; one failed check when it cannot be reached."""
    try:
        gateway = connect()
    except CLIError as e:
        return [doctor.CheckResult("docker engine", doctor.FAIL, str(e))]
    return await run_checks(gateway, options)


def report_checks(results: list, out: TextIO) -> int:
    print(format_table(doctor_rows(results)), file=out)
    return EXIT_PROBLEM if any(r.failed for r in results) else EXIT_OK


async def run_prepare(args: argparse.Namespace, out: TextIO) -> int:
    if not args.config:
        raise CLIError(
            "prepare needs the hub's config file (-f jupyterhub_config.py): it resolves each user's settings"
        )
    if not args.group and not args.users:
        raise CLIError("name the class: --group NAME (may be repeated) and/or --users A,B,C")
    config = load_config(args.config)
    if args.prefix:
        config.MultiUserSpawner.prefix = args.prefix
    settings_from_args(args)  # the same checks as the other commands, before anything is made
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if not token:
        raise CLIError(
            "set JUPYTERHUB_API_TOKEN to a hub API token with the scopes " + ", ".join(prepare.REQUIRED_SCOPES)
        )
    client = hub_api.HubClient(args.hub_url, token)
    try:
        wanted = await asyncio.to_thread(class_list, client, args.group, args.users)
        models = {name: await asyncio.to_thread(client.user, name) for name in wanted}
        members = prepare.members_of(wanted, models)
    except (hub_api.HubAPIError, ValueError) as e:
        raise CLIError(f"{e}; nothing was prepared") from e
    if not members:
        print("No users to prepare.", file=out)
        return EXIT_OK

    def on_done(outcome: prepare.Outcome, done: int, total: int) -> None:
        print(f"{prepare.progress_bar(done, total)} {outcome.user}: {outcome.status}", file=out, flush=True)

    summary = await prepare.prepare_members(
        members, lambda member: prepare.prepare_member(config, member), args.parallel, on_done
    )
    print("", file=out)
    print(
        format_table(([o.user, o.status, o.detail] for o in summary.outcomes), ("USER", "RESULT", "DETAIL")), file=out
    )
    print(f"\n{summary.line()}", file=out)
    return EXIT_PROBLEM if summary.failed else EXIT_OK


def class_list(client: hub_api.HubClient, groups: Sequence[str] | None, users: str | None) -> list[str]:
    """The users named by ``--group`` (each group's members) and ``--users a,b,c``."""
    wanted = [u.strip() for u in (users or "").split(",") if u.strip()]
    for group in groups or []:
        wanted += client.group_members(group)
    return sorted(set(wanted))


# -- arguments --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-f", "--config", metavar="FILE", help="the hub's jupyterhub_config.py, to read the prefix, names and images"
    )
    common.add_argument("--prefix", help="the spawner's prefix (default: from the config file, else 'jupyter')")
    on_swarm = argparse.ArgumentParser(add_help=False)
    on_swarm.add_argument(
        "--swarm",
        action="store_true",
        help="the hub runs on a Docker Swarm (default: when the config's c.JupyterHub.spawner_class is the "
        "Swarm spawner); talk to this manager about services, overlays and each node's volumes",
    )

    parser = argparse.ArgumentParser(
        prog="multiuser-spawner", description="Inspect and tidy the Docker objects of multiuser-spawner."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ls = commands.add_parser(
        "ls",
        parents=[common, on_swarm],
        help="list containers (services, with their nodes, on a swarm), networks and volumes per user and server",
    )
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.add_argument("--all", action="store_true", help="every object with the project's label, of any hub")
    ls.add_argument("--no-sizes", action="store_true", help="skip volume sizes (Docker walks every volume for them)")
    ls.set_defaults(run=run_ls)

    gc = commands.add_parser(
        "gc",
        parents=[common, on_swarm],
        help="remove containers (services) and networks no running server needs (dry run by default)",
    )
    gc.add_argument(
        "--hub-url",
        default=hub_api.default_api_url(),
        help="the hub's API URL (default: $JUPYTERHUB_API_URL, $JUPYTERHUB_URL or %(default)s when unset); "
        "the token comes from $JUPYTERHUB_API_TOKEN",
    )
    gc.add_argument("--yes", action="store_true", help="remove for real (default: only print what would go)")
    gc.add_argument(
        "--volumes-of-deleted-users",
        action="store_true",
        help="also remove the volumes (home, services' data) of users the hub no longer has: their files are lost",
    )
    gc.add_argument("--stop-timeout", type=int, default=cleanup.DEFAULT_STOP_TIMEOUT, help="seconds to stop each")
    gc.add_argument("--hub-container", default=None, help="the hub's container, if any (default: from the config)")
    gc.set_defaults(run=run_gc)

    dr = commands.add_parser(
        "doctor",
        parents=[common, on_swarm],
        help="check that this Docker host (or every node of a swarm) can run the spawner",
    )
    dr.add_argument("--image", help="the notebook image (default: the configured image)")
    dr.add_argument(
        "--service-image",
        action="append",
        metavar="NAME=IMAGE",
        help="check this image for the service NAME (default: the configured services' images); may be repeated",
    )
    dr.add_argument(
        "--hub-connect-url", help="the hub's API as containers reach it, e.g. http://172.17.0.1:8081/hub/api"
    )
    dr.add_argument("--hub-container", default=None, help="the hub's container, if any (default: from the config)")
    dr.set_defaults(run=run_doctor)
    pr = commands.add_parser(
        "prepare",
        parents=[common],
        help="create users' home volumes and initialise their services' volumes before their first spawn",
    )
    pr.add_argument("--group", action="append", help="prepare every member of this hub group; may be repeated")
    pr.add_argument("--users", metavar="A,B,C", help="prepare these hub users (comma-separated)")
    pr.add_argument(
        "--hub-url",
        default=hub_api.default_api_url(),
        help="the hub's API URL (as for gc); the token comes from $JUPYTERHUB_API_TOKEN",
    )
    pr.add_argument("--parallel", type=int, default=4, help="users prepared at once (default: %(default)s)")
    pr.set_defaults(run=run_prepare)

    top.add_parser(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import docker.errors

    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(args.run(args, sys.stdout))
    except (CLIError, DockerGatewayError, docker.errors.DockerException) as e:
        print(f"multiuser-spawner {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
