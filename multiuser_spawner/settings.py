"""The settings MultiUserSpawner adds to DockerSpawner's.

Every trait is declared one way, ``Trait(default, help=...).tag(config=True)``, and checked when set, so a wrong
value fails with the setting's name. Set them as ``c.MultiUserSpawner.<name>``; they also work in
``c.Spawner.group_overrides`` and in a profile's ``spawner_override``.
"""

from __future__ import annotations

import string

from jupyterhub.traitlets import ByteSpecification
from traitlets import Bool, Dict, Float, Int, List, Unicode, Union, validate
from traitlets.config import Configurable

from . import names
from .addresses import parse_pool
from .profiles import parse_profiles
from .services import parse_services

_TEMPLATE_FIELDS = "``{prefix}``, ``{user}``, ``{server}`` and ``{server_suffix}``"


class MultiUserSettings(Configurable):
    # -- names --------------------------------------------------------------------------------------------------

    home_volume_name_template = Unicode(
        names.NameTemplates.home_volume,
        help=f"""Name of each user's home volume; {_TEMPLATE_FIELDS} are filled in.

        The default gives one home volume per user, shared by all of that user's named servers (their files are
        theirs whichever server they open). Add ``{{server_suffix}}`` for one volume per server. An empty string
        turns the home volume off. Changing this on a running deployment points users at new, empty volumes.

        A DockerSpawner ``volumes`` entry mounted on ``home_mount_path`` takes this template's place (see the
        documentation's "From DockerSpawner"): the home volume then has the name DockerSpawner gives it.
        """,
    ).tag(config=True)

    home_mount_path = Unicode(
        "/home/jovyan",
        help="""Where the home volume is mounted in the container: the image user's home directory. A
        DockerSpawner ``volumes`` entry on this path is the home volume.""",
    ).tag(config=True)

    fix_home_ownership = Bool(
        True,
        help="""Make the home volume's top directory owned by the image's user before the server starts.

        Docker creates volume mount points owned by root when the image has no such directory (or root owns it),
        which leaves the user unable to write their own home. A short-lived container from the same image (as root,
        without network) gives the volume's top directory to the image's user when it is not theirs: for a new
        volume, and once per existing volume while the hub runs, so a volume an interrupted start left root's is
        fixed by the next start. When it finds a new volume theirs already (Docker copied the image's own home
        directory into it, owner included), other volumes of the same image, mount path and user skip it for as
        long as the hub runs. Only the top directory's owner ever changes.
        """,
    ).tag(config=True)

    network_name_template = Unicode(
        names.NameTemplates.network,
        help=f"Name of a server's private network; {_TEMPLATE_FIELDS} are filled in.",
    ).tag(config=True)

    service_container_name_template = Unicode(
        names.NameTemplates.service_container,
        help=f"Name of the container of each of a server's services; {_TEMPLATE_FIELDS} and ``{{service}}`` (the "
        "service's key in ``services``) are filled in.",
    ).tag(config=True)

    service_volume_name_template = Unicode(
        names.NameTemplates.service_volume,
        help=f"Name of the data volume of each of a server's services; {_TEMPLATE_FIELDS} and ``{{service}}`` are "
        "filled in. Changing it on a running deployment points users at new, empty volumes.",
    ).tag(config=True)

    database_container_name_template = Unicode(
        names.NameTemplates.service_container.replace("{service}", names.LEGACY_DATABASE_SERVICE),
        help="Deprecated (use ``service_container_name_template``): name of the container of the database that "
        "``database_enabled`` turns on.",
    ).tag(config=True)

    database_volume_name_template = Unicode(
        names.NameTemplates.service_volume.replace("{service}", names.LEGACY_DATABASE_SERVICE),
        help="Deprecated (use ``service_volume_name_template``): name of the data volume of the database that "
        "``database_enabled`` turns on.",
    ).tag(config=True)

    # -- private networks ---------------------------------------------------------------------------------------

    private_network = Bool(
        True,
        help="""Give every server a private network of its own, with or without services, so no user's notebook
        can reach another's (as JupyterHub on Kubernetes does by default). The hub still reaches every server.
        False: a server without services joins ``network_name`` (DockerSpawner's behaviour), where every notebook
        reaches every other, for a course that wants students to serve each other.""",
    ).tag(config=True)

    network_address_pool = Unicode(
        "10.201.0.0/16",
        help="""The addresses the private networks get, carved into subnets of ``network_subnet_size``: with the
        default, 4,096 servers at once on a stock Docker engine (Docker's own pools hold about 30 networks). Pick a
        range no other network of the host or its site uses. Empty: let Docker choose from its own pools.""",
    ).tag(config=True)

    network_subnet_size = Int(
        28,
        min=16,
        max=29,
        help="""Prefix length of each private network's subnet. A /28 holds 13 containers: the notebook, its
        services and the hub's container, with room to spare.""",
    ).tag(config=True)

    # -- environment --------------------------------------------------------------------------------------------

    user_id_env = Unicode(
        "USER_ID",
        help="Name of the environment variable that tells the container whose it is. Empty: not set.",
    ).tag(config=True)

    user_id_template = Unicode(
        "{raw_username}",
        help="""Value of ``user_id_env``. Like every string in ``environment``, it may use ``{raw_username}`` (the
        hub username as it is), ``{user}`` and ``{server}`` (their safe slugs), ``{raw_servername}``,
        ``{username}`` (DockerSpawner's escaped form) and ``{prefix}``.""",
    ).tag(config=True)

    # -- performance --------------------------------------------------------------------------------------------

    docker_api_concurrency = Int(
        16,
        min=1,
        help="""How many Docker API calls may run at once, across all users. DockerSpawner runs them one at a
        time; a class logging in together then waits in one queue. Read once, when the first server starts.""",
    ).tag(config=True)

    poll_view_max_age = Float(
        None,
        allow_none=True,
        help="""How old (seconds) the shared list of containers that ``poll()`` reads may get before it is
        refreshed. One refresh serves every user's poll. ``None``: ``poll_interval``.""",
    ).tag(config=True)

    stop_timeout = Int(
        10,
        min=0,
        help="Seconds a container gets to exit after SIGTERM before Docker kills it.",
    ).tag(config=True)

    # -- security -----------------------------------------------------------------------------------------------

    no_new_privileges = Bool(
        True,
        help="Set Docker's no-new-privileges: no process in the container can gain privileges (setuid, file caps).",
    ).tag(config=True)

    cap_drop = List(
        Unicode(),
        ["ALL"],
        help="Linux capabilities dropped from the notebook container. The single-user server needs none.",
    ).tag(config=True)

    cap_add = List(
        Unicode(),
        [],
        help="Capabilities added back to the notebook container (after ``cap_drop``), e.g. ``['CHOWN']``.",
    ).tag(config=True)

    pids_limit = Int(
        1024,
        min=0,
        help="Most processes and threads a notebook container may have; stops fork bombs. 0: no limit.",
    ).tag(config=True)

    use_init = Bool(
        True,
        help="Run an init process (Docker's tini) as PID 1: signals reach the server, so stops are fast, and zombie "
        "processes are reaped.",
    ).tag(config=True)

    allow_root = Bool(
        False,
        help="""Allow notebook containers to run as root. Off: a spawn whose image (or ``extra_create_kwargs``)
        runs as root fails with a message saying so.""",
    ).tag(config=True)

    # -- per-user services --------------------------------------------------------------------------------------

    services = Dict(
        {},
        help="""Private services beside each notebook, by name: ``{"db": {"preset": "postgres"}, "cache":
        {"preset": "redis"}}``. Each runs in a container of its own on the server's private network, where the
        notebook reaches it by its ``alias`` (default: its name) and no other user can; each has its own volume and
        a generated password, kept as long as the data, and the spawn waits until every service is ready.

        Settings of a service (a ``preset`` fills them all; any can be set): ``image``, ``alias``, ``port``,
        ``volume`` (mount path of its data volume; omit for none), ``environment``, ``command``, ``ready``
        (``"tcp"``, ``"postgres"``, ``"redis"``, ``"amqp"``, ``"mysql"``, or a command run in the container),
        ``ready_interval``, ``ready_timeout``, ``cpu_limit``, ``mem_limit``, ``cpu_guarantee``,
        ``mem_guarantee``, ``cap_add``, ``stop_signal``, ``user``, ``name`` and ``notebook_environment`` (what
        the notebook is told). Strings may use ``{host}``, ``{port}``, ``{user}``, ``{password}``, ``{name}``,
        ``{service}``, ``{raw_username}`` and ``{prefix}``. Presets: ``postgres``, ``redis``, ``rabbitmq``,
        ``mysql``. No service runs without limits: a preset sets them, others get 0.5 CPU and 256M.

        A service is on for everyone whose settings have it, so ``group_overrides`` and profiles turn services on
        per tier (``{"services": {"cache": {"preset": "redis"}}}`` merges in). Checked when the hub starts.""",
    ).tag(config=True)

    database_enabled = Bool(
        False,
        help="""Deprecated: use ``services = {"db": {"preset": "postgres"}}``. Turns on the service ``db`` with the
        Postgres preset and the ``database_*`` settings below; existing databases (volume, password, data) are
        found again.""",
    ).tag(config=True)

    database_image = Unicode(
        "postgres:15",
        help="Image of the database container. Any image with the official postgres image's interface works as "
        "it is; see ``database_env`` and ``database_ready_command`` for others (MySQL, MariaDB).",
    ).tag(config=True)

    database_hostname = Unicode(
        "db",
        help="The name the notebook reaches its database by (a network alias on the private network).",
    ).tag(config=True)

    database_port = Int(5432, min=1, max=65535, help="The port the database listens on.").tag(config=True)

    database_user = Unicode("jupyter", help="The database user made for the notebook.").tag(config=True)

    database_name = Unicode("jupyter", help="The database made for the notebook.").tag(config=True)

    database_url_scheme = Unicode(
        "postgresql",
        help="Scheme of ``DATABASE_URL`` given to the notebook (``mysql`` for MySQL, for instance).",
    ).tag(config=True)

    database_data_path = Unicode(
        "/var/lib/postgresql/data",
        help="Where the database keeps its data in its container; the data volume is mounted there.",
    ).tag(config=True)

    database_env = Dict(
        {
            "POSTGRES_USER": "{db_user}",
            "POSTGRES_PASSWORD": "{db_password}",
            "POSTGRES_DB": "{db_name}",
        },
        help="""Environment of the database container, with ``{db_user}``, ``{db_password}``, ``{db_name}`` and
        ``{db_port}`` filled in. The default fits the official postgres image.""",
    ).tag(config=True)

    database_ready_command = List(
        Unicode(),
        [],
        help="""Command run in the database container until it exits 0; the spawn finishes only then.
        ``{db_*}`` fields are filled in. It must fail while the image's first-run setup is still going on.
        Empty (the default): the database is Postgres, and the hub asks it directly over its network, by
        ``pg_isready``'s rule, with no ``docker exec``; if the hub cannot reach that network, it runs ``pg_isready``
        in the container instead.""",
    ).tag(config=True)

    database_ready_timeout = Float(
        60,
        min=1,
        help="Seconds to wait for the database to be ready before the spawn fails (showing the database's logs).",
    ).tag(config=True)

    database_cpu_limit = Float(
        None, allow_none=True, help="CPU limit of the database container, in cores. None: the preset's (0.5)."
    ).tag(config=True)

    database_mem_limit = Union(
        [ByteSpecification(), Int()],
        default_value=None,
        allow_none=True,
        help="Memory limit of the database container (e.g. ``'256M'``). None: the preset's (256M).",
    ).tag(config=True)

    database_cap_add = List(
        Unicode(),
        ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID", "KILL"],
        help="""Capabilities the database container keeps (all others are dropped): what the official postgres
        image's entrypoint needs to prepare its data directory and switch to its own user, and KILL, without which
        the init process (root) cannot pass the stop signal on to the database (another user), so every stop
        would end in a kill and a crash recovery.""",
    ).tag(config=True)

    database_stop_signal = Unicode(
        "SIGINT",
        help="Signal that stops the database (SIGINT is postgres' fast shutdown; SIGTERM waits for clients).",
    ).tag(config=True)

    remove_volumes_on_delete = Bool(
        False,
        help="""When the hub deletes a user (or a named server), also remove their volumes: home and database data.
        Off by default: deleting an account then never deletes anyone's work; ``multiuser-spawner gc
        --volumes-of-deleted-users`` removes such volumes later, on purpose.""",
    ).tag(config=True)

    hub_container_name = Unicode(
        "",
        help="""When the hub runs in a container: its name. It is joined to every private user network, so the
        hub and each notebook reach each other there. Leave empty with the hub on the host.""",
    ).tag(config=True)

    # -- profiles -----------------------------------------------------------------------------------------------

    profiles = List(
        Dict(),
        [],
        help="""Profiles a user picks from on the spawn page (or with ``{"profile": "<slug>"}`` in the REST API).

        Each is a dict with ``slug`` (required; lowercase letters, digits, dashes), ``display_name``,
        ``description``, ``groups`` (hub groups that may use it; everyone when absent), ``default`` (the one
        preselected) and ``spawner_override`` (settings it sets, as in ``group_overrides``: limits, guarantees,
        ``image`` (from ``allowed_images`` when that is set), ``database_enabled``, ``environment``, ...).

        Precedence: settings < ``group_overrides`` < the chosen profile. A user sees only the profiles their
        groups allow, and the form only when there is more than one. Checked when the hub starts.
        """,
    ).tag(config=True)

    # -- validation ---------------------------------------------------------------------------------------------

    @validate(
        "home_volume_name_template",
        "network_name_template",
        "service_container_name_template",
        "service_volume_name_template",
        "database_container_name_template",
        "database_volume_name_template",
    )
    def _check_name_template(self, proposal):
        template = proposal.value
        if proposal.trait.name == "home_volume_name_template" and not template:
            return template
        # Filled with a long, awkward sample name: a template that breaks here breaks for someone.
        fields = names.template_fields("jupyter", "Sample.User@example.org", "named-server")
        fields["service"] = "sample-service"
        names.render_name(template, fields, proposal.trait.name)
        require_user_field(proposal.trait.name, template)
        return template

    @validate("name_template")
    def _check_container_name_template(self, proposal):
        # DockerSpawner's setting: its own fields ({username}, ...) are filled in too, so only the user is checked.
        require_user_field("name_template", proposal.value)
        return proposal.value

    @validate("services")
    def _check_services(self, proposal):
        parse_services(proposal.value)
        return proposal.value

    @validate("network_address_pool")
    def _check_address_pool(self, proposal):
        if proposal.value:
            try:
                parse_pool(proposal.value, self.network_subnet_size)
            except ValueError as e:
                raise ValueError(f"network_address_pool: {e}") from None
        return proposal.value

    @validate("profiles")
    def _check_profiles(self, proposal):
        parse_profiles(proposal.value, type(self).class_trait_names(config=True))
        return proposal.value

    @validate("database_env")
    def _check_database_env(self, proposal):
        for key, value in proposal.value.items():
            if not isinstance(value, str):
                raise ValueError(f"database_env[{key!r}] must be a string, not {value!r}")
        return proposal.value


#: the template fields that tell users apart: ours, and DockerSpawner's (in ``name_template``)
USER_FIELDS = frozenset({"user", "username", "safe_username", "raw_username"})
_SHARED_OBJECT = {
    "name_template": "one notebook container",
    "home_volume_name_template": "one home volume, and so their files",
    "network_name_template": "one private network",
    "service_container_name_template": "each service's container",
    "service_volume_name_template": "each service's data volume, and so its database",
    "database_container_name_template": "one database container",
    "database_volume_name_template": "one database volume, and so its data",
}


def template_field_names(template: str) -> set[str]:
    """The fields a ``str.format`` template uses, without attribute or index (``{user.x}`` → ``user``)."""
    found = set()
    for _, field_name, _, _ in string.Formatter().parse(template):
        if field_name:
            found.add(field_name.split(".", 1)[0].split("[", 1)[0])
    return found


def require_user_field(setting: str, template: str) -> None:
    """A name template without the user in it gives every user the same object: refuse it, naming the setting."""
    if not template_field_names(template) & USER_FIELDS:
        raise ValueError(
            f"c.MultiUserSpawner.{setting}: template {template!r} has no {{user}} field, so all users would share "
            f"{_SHARED_OBJECT[setting]}; put {{user}} in it"
        )
