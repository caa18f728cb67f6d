"""The CLI's decisions on literal data: grouping by labels, what belongs to a hub, what is an orphan, the hub's
answers, the doctor's verdicts and the output. No Docker here."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from traitlets.config import Config

from multiuser_spawner import (
    cleanup,
    cli,
    doctor,
    hub_api,
    inventory,
    names,
    prepare,
    swarm,
    swarm_doctor,
    swarm_inventory,
)
from multiuser_spawner.inventory import Orphan, Resource

P = "jupyter"
IDS = {"alice": "1", "bob": "2", "carol": "3"}


def owner(user: str, server: str = "", hub: str = P) -> names.Owner:
    return names.Owner(hub=hub, user=user, user_id=IDS.get(user, "99"), server=server)


def lab(role: str, user: str, server: str = "") -> dict[str, str]:
    return names.labels(role, owner(user, server))


def legacy_lab(role: str, user: str, server: str = "") -> dict[str, str]:
    """Labels as releases before hub and user ids made them."""
    labels = lab(role, user, server)
    del labels[names.LABEL_HUB], labels[names.LABEL_USER_ID], labels[names.LABEL_USER_CREATED]
    return labels


def hub_users(running=(), users=None, ids=None) -> inventory.HubUsers:
    """What the hub says: ``running`` servers as (user, server) pairs, their ids from ``ids`` (name -> id, or
    an Identity) when given."""
    known = {name: i if isinstance(i, names.Identity) else names.Identity(i) for name, i in (ids or {}).items()}
    return inventory.HubUsers(
        running={(u, s): known.get(u, names.Identity()) for u, s in running},
        names=frozenset(users) if users is not None else None,
        ids=known,
    )


CONTAINERS = [
    {"Id": "c1", "Names": ["/jupyter-alice"], "State": "running", "Labels": lab("notebook", "alice")},
    {"Id": "c2", "Names": ["/jupyter-alice.lab_db"], "State": "exited", "Labels": lab("database", "alice", "lab")},
    {"Id": "c3", "Names": ["/someone-else"], "State": "running", "Labels": {"other": "x"}},
    {"Id": "c4", "Names": ["/jupyter-bob"], "State": "exited", "Labels": lab("notebook", "bob")},
]
NETWORKS = [
    {"Id": "n1", "Name": "jupyter-alice.lab_net", "Labels": lab("network", "alice", "lab")},
    {"Id": "n2", "Name": "bridge", "Labels": None},
]
VOLUMES = [
    {"Name": "jupyter-alice_home", "Labels": lab("home", "alice")},
    {"Name": "jupyter-alice.lab_db", "Labels": lab("database-data", "alice", "lab")},
    {"Name": "jupyter-carol_home", "Labels": lab("home", "carol")},
    {"Name": "anonymous", "Labels": None},
]
DISK_USAGE = {
    "Volumes": [
        {"Name": "jupyter-alice_home", "UsageData": {"Size": 12_345_678, "RefCount": 1}},
        {"Name": "jupyter-carol_home", "UsageData": {"Size": -1, "RefCount": 0}},
        {"Name": "anonymous", "UsageData": None},
    ]
}


@pytest.fixture
def resources() -> list[Resource]:
    return inventory.collect(CONTAINERS, NETWORKS, VOLUMES, inventory.volume_sizes(DISK_USAGE))


def by_name(resources: list[Resource]) -> dict[str, list[Resource]]:
    found: dict[str, list[Resource]] = {}
    for r in resources:
        found.setdefault(r.name, []).append(r)
    return found


# -- inventory ----------------------------------------------------------------------------------------------------


def test_collect_keeps_only_labelled_objects_sorted_by_user_server_kind(resources):
    assert [(r.user, r.server, r.kind, r.name) for r in resources] == [
        ("alice", "", "container", "jupyter-alice"),
        ("alice", "", "volume", "jupyter-alice_home"),
        ("alice", "lab", "container", "jupyter-alice.lab_db"),
        ("alice", "lab", "network", "jupyter-alice.lab_net"),
        ("alice", "lab", "volume", "jupyter-alice.lab_db"),
        ("bob", "", "container", "jupyter-bob"),
        ("carol", "", "volume", "jupyter-carol_home"),
    ]


def test_resources_carry_state_size_and_ids(resources):
    found = by_name(resources)
    (notebook,) = found["jupyter-alice"]
    assert (notebook.id, notebook.state, notebook.role, notebook.size) == ("c1", "running", "notebook", None)
    (home,) = found["jupyter-alice_home"]
    assert (home.id, home.size, home.role) == ("jupyter-alice_home", 12_345_678, "home")
    # Docker's -1 ("not computed") becomes unknown, not a negative size
    (carol,) = found["jupyter-carol_home"]
    assert carol.size is None


def test_volume_sizes_skips_unknown_sizes():
    assert inventory.volume_sizes(DISK_USAGE) == {"jupyter-alice_home": 12_345_678}
    assert inventory.volume_sizes({"Volumes": None}) == {}


def test_objects_of_this_hub_are_those_with_its_hub_label_whatever_their_name():
    templates = names.NameTemplates()

    def resource(name: str, hub: str) -> Resource:
        return Resource(kind="container", name=name, id=name, user="alice", server="", role="notebook", hub=hub)

    assert inventory.belongs_to_hub(resource("jupyter-alice", P), P, templates)
    assert inventory.belongs_to_hub(resource("renamed-by-hand", P), P, templates)
    # exact match: neither a hub whose prefix starts with ours, nor one ours starts with
    assert not inventory.belongs_to_hub(resource("jupyter-alice", "jupyter-staging"), P, templates)
    assert not inventory.belongs_to_hub(resource("jupyter-staging-alice", "jupyter-staging"), P, templates)
    assert not inventory.belongs_to_hub(resource("jupyter-alice", "jupyter"), "jupyter-staging", templates)
    assert not inventory.belongs_to_hub(resource("jupyter-alice", "jupyte"), P, templates)


def test_objects_of_earlier_releases_of_this_hub_are_named_exactly_as_its_templates_say():
    templates = names.NameTemplates()

    def resource(name: str, role: str, user: str, server: str = "") -> Resource:
        return Resource(kind="container", name=name, id=name, user=user, server=server, role=role)

    assert inventory.belongs_to_hub(resource("jupyter-alice", "notebook", "alice"), P, templates)
    assert inventory.belongs_to_hub(resource("jupyter-alice.lab_net", "network", "alice", "lab"), P, templates)
    escaped_home = f"jupyter-{names.safe_slug('A.B', names.MAX_USER_SLUG)}_home"
    assert inventory.belongs_to_hub(resource(escaped_home, "home", "A.B"), P, templates)
    # another hub whose prefix starts with ours: same user, but not our object
    assert not inventory.belongs_to_hub(resource("jupyter-staging-alice", "notebook", "alice"), P, templates)
    # a name that does not fit the labels (renamed by hand, or a template changed since)
    assert not inventory.belongs_to_hub(resource("jupyter-bob", "notebook", "alice"), P, templates)
    # no owner: never ours to touch
    assert not inventory.belongs_to_hub(resource("jupyter-doctor_x_net", "network", ""), P, templates)


def test_a_home_named_by_a_dockerspawner_volumes_entry_is_the_users_by_its_labels():
    made = inventory.from_volume({"Name": "jupyterhub-user-alice", "Labels": lab("home", "alice")}, {})
    assert inventory.belongs_to_hub(made, P, names.NameTemplates())
    assert inventory.select_for_owner([made], owner("alice"), names.NameTemplates(), include_volumes=True) == [made]
    # one DockerSpawner made has no labels at all: collect() never even lists it
    assert inventory.collect([], [], [{"Name": "jupyterhub-user-bob", "Labels": None}]) == []


def test_an_old_object_whose_template_the_cli_cannot_fill_is_left_alone():
    templates = names.NameTemplates(container="{prefix}-{username}")  # DockerSpawner's escaped name
    r = Resource(kind="container", name="jupyter-alice", id="c", user="alice", server="", role="notebook")
    assert inventory.expected_name(r, P, templates) is None
    # a name prefix is never enough: "jupyter-alice" may be hub jupyter-staging's... or anyone's
    assert not inventory.belongs_to_hub(r, P, templates)
    # with this release's hub label, the label decides
    assert inventory.belongs_to_hub(Resource(**{**r.__dict__, "hub": P}), P, templates)


def test_containers_and_networks_without_a_running_server_are_orphans(resources):
    orphans = inventory.find_orphans(resources, hub_users(running={("alice", "")}))
    assert [(o.resource.name, o.resource.kind, o.reason) for o in orphans] == [
        ("jupyter-alice.lab_db", "container", inventory.REASON_NO_SERVER),
        ("jupyter-alice.lab_net", "network", inventory.REASON_NO_SERVER),
        ("jupyter-bob", "container", inventory.REASON_NO_SERVER),
    ]


def test_volumes_go_only_for_deleted_users_and_only_when_asked(resources):
    assert not [o for o in inventory.find_orphans(resources, hub_users()) if o.resource.kind == "volume"]
    orphans = inventory.find_orphans(resources, hub_users(users={"alice", "bob"}))
    volumes = [o for o in orphans if o.resource.kind == "volume"]
    assert [(o.resource.name, o.reason) for o in volumes] == [("jupyter-carol_home", inventory.REASON_DELETED_USER)]


def test_a_volume_without_owner_is_never_an_orphan():
    ownerless = Resource(kind="volume", name="jupyter-x", id="jupyter-x", user="", server="", role="home")
    assert inventory.find_orphans([ownerless], hub_users(users=())) == []


def test_select_for_owner_by_server_and_volumes(resources):
    def chosen(**kwargs) -> list[str]:
        return [r.name for r in inventory.select_for_owner(resources, owner("alice"), names.NameTemplates(), **kwargs)]

    assert chosen() == ["jupyter-alice", "jupyter-alice.lab_db", "jupyter-alice.lab_net"]
    assert chosen(include_volumes=True) == [
        "jupyter-alice",
        "jupyter-alice_home",
        "jupyter-alice.lab_db",
        "jupyter-alice.lab_net",
        "jupyter-alice.lab_db",
    ]
    assert chosen(servername="lab", include_volumes=True) == [
        "jupyter-alice.lab_db",
        "jupyter-alice.lab_net",
        "jupyter-alice.lab_db",
    ]
    # another hub's alice, or a deleted alice of this hub, owns none of these
    other_hub = owner("alice", hub="jupyter-staging")
    assert inventory.select_for_owner(resources, other_hub, names.NameTemplates(), include_volumes=True) == []
    new_alice = names.Owner(hub=P, user="alice", user_id="7")
    assert inventory.select_for_owner(resources, new_alice, names.NameTemplates(), include_volumes=True) == []


def volume(name: str, user: str, user_id: str, role: str = "home", server: str = "", service: str = "") -> Resource:
    return Resource(
        kind="volume", name=name, id=name, user=user, server=server, role=role, hub=P, user_id=user_id, service=service
    )


def test_a_renamed_users_volumes_are_kept_by_id_and_a_deleted_users_go():
    renamed = volume("jupyter-alice_home", "alice", "1")  # alice is now called alicia
    deleted = volume("jupyter-bob_home", "bob", "2")
    namesake = volume("jupyter-carol_home", "carol", "3")  # carol deleted, a new carol (id 8) made
    everyone = hub_users(users={"alicia", "carol"}, ids={"alicia": "1", "carol": "8"})
    orphans = inventory.find_orphans([renamed, deleted, namesake], everyone)
    assert [(o.resource.name, o.reason) for o in orphans] == [
        ("jupyter-bob_home", inventory.REASON_DELETED_USER),
        ("jupyter-carol_home", inventory.REASON_NAME_GIVEN_ANEW),
    ]
    # a user of that name exists and the hub recorded no id for them: kept
    assert inventory.find_orphans([namesake], hub_users(users={"carol"}, ids={})) == []


def test_an_id_given_again_by_the_hub_is_another_user():
    first = Resource(
        kind="volume",
        name="jupyter-ida_home",
        id="v",
        user="ida",
        server="",
        role="home",
        hub=P,
        user_id="5",
        user_created="2026-01-01T10:00:00.000001",
    )
    second_ida = names.Identity("5", "2026-03-01T10:00:00.000002")  # SQLite reused the deleted ida's id
    (orphan,) = inventory.find_orphans([first], hub_users(users={"ida"}, ids={"ida": second_ida}))
    assert orphan.reason == inventory.REASON_NAME_GIVEN_ANEW
    assert not inventory.is_owned_by(
        first, names.Owner(P, "ida", "5", "", "2026-03-01T10:00:00.000002"), names.NameTemplates()
    )
    assert inventory.is_owned_by(
        first, names.Owner(P, "ida", "5", "", "2026-01-01T10:00:00.000001"), names.NameTemplates()
    )


def test_prepared_volumes_know_their_user_by_creation_time_only():
    """``prepare`` cannot learn ids from the hub's API: its volumes carry the user's creation time, written as the
    spawner writes it, so a later spawn, delete or gc still tells the user apart from a namesake."""
    from jupyterhub.utils import isoformat

    for stamp in ("2026-01-02T03:04:05.000006Z", "2026-01-02T03:04:05Z"):
        member = prepare.member_from_model({"name": "ann", "groups": [], "servers": {}, "created": stamp})
        assert isoformat(member.created) == stamp
    prepared = names.Identity("", "2026-01-02T03:04:05.000006Z")
    assert prepared.same_user(names.Identity("4", "2026-01-02T03:04:05.000006Z"))
    assert prepared.same_user(names.Identity("4", "2026-05-01T00:00:00Z")) is False
    assert prepared.same_user(names.Identity()) is None  # an object of an earlier release: the name decides


def test_volumes_of_earlier_releases_are_never_removed_when_their_name_is_gone():
    old = Resource(kind="volume", name="jupyter-alice_home", id="v", user="alice", server="", role="home")
    assert inventory.find_orphans([old], hub_users(users={"alicia"})) == []
    assert inventory.unsure_volumes([old], frozenset({"alicia"})) == [old]
    assert inventory.unsure_volumes([old], frozenset({"alice"})) == []


def test_a_renamed_users_running_server_keeps_its_containers():
    container = Resource(
        kind="container", name="jupyter-alice", id="c", user="alice", server="", role="notebook", hub=P, user_id="1"
    )
    assert inventory.find_orphans([container], hub_users(running={("alicia", "")}, ids={"alicia": "1"})) == []
    # a deleted alice's leftover, while a new alice (id 8) runs: an orphan
    (orphan,) = inventory.find_orphans([container], hub_users(running={("alice", "")}, ids={"alice": "8"}))
    assert orphan.reason == inventory.REASON_NO_SERVER
    # the running server's id is unknown (started before ids were recorded): its name keeps it
    assert inventory.find_orphans([container], hub_users(running={("alice", "")})) == []


def test_a_renamed_user_keeps_the_volumes_made_for_their_id():
    wanted = names.resource_names(names.NameTemplates(), names.template_fields(P, "alicia", ""), ["db"])
    theirs = [
        volume("jupyter-alice_home", "alice", "1"),
        volume("jupyter-alice_db", "alice", "1", role="service-data", service="db"),
    ]
    kept = inventory.names_kept_through_rename(wanted, theirs, home_server="", server="")
    assert (kept.home_volume, kept.services["db"].volume) == ("jupyter-alice_home", "jupyter-alice_db")
    assert (kept.container, kept.network) == (wanted.container, wanted.network)  # those are made anew
    # a volume under the current name wins; none found: the current name
    both = [*theirs, volume("jupyter-alicia_home", "alicia", "1")]
    assert inventory.names_kept_through_rename(wanted, both, home_server="", server="").home_volume == (
        "jupyter-alicia_home"
    )
    assert inventory.names_kept_through_rename(wanted, [], home_server="", server="") == wanted
    # another server's service volume is not this server's
    other_server = [volume("jupyter-alice.lab_db", "alice", "1", role="service-data", server="lab", service="db")]
    assert inventory.names_kept_through_rename(wanted, other_server, home_server="", server="") == wanted
    several = [volume("jupyter-a_home", "a", "1"), volume("jupyter-b_home", "b", "1")]
    with pytest.raises(ValueError, match="several home volumes.*jupyter-a_home, jupyter-b_home"):
        inventory.names_kept_through_rename(wanted, several, home_server="", server="")


def test_json_groups_by_user_then_server(resources):
    document = inventory.as_json(resources)
    json.dumps(document)  # serialisable as it is
    assert [u["name"] for u in document["users"]] == ["alice", "bob", "carol"]
    alice = document["users"][0]
    assert [s["name"] for s in alice["servers"]] == ["", "lab"]
    default, lab_server = alice["servers"]
    assert default["containers"] == [
        {
            "name": "jupyter-alice",
            "id": "c1",
            "role": "notebook",
            "hub": P,
            "user_id": "1",
            "user_created": "",
            "state": "running",
        }
    ]
    assert default["volumes"] == [
        {
            "name": "jupyter-alice_home",
            "id": "jupyter-alice_home",
            "role": "home",
            "hub": P,
            "user_id": "1",
            "user_created": "",
            "size": 12_345_678,
        }
    ]
    assert default["networks"] == []
    assert [n["name"] for n in lab_server["networks"]] == ["jupyter-alice.lab_net"]


# -- the hub's answers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8081/hub/api", "http://127.0.0.1:8081/hub/api"),
        ("http://127.0.0.1:8081/hub/api/", "http://127.0.0.1:8081/hub/api"),
        ("https://hub.example.org", "https://hub.example.org/hub/api"),
        ("https://hub.example.org/hub/", "https://hub.example.org/hub/api"),
        ("https://example.org/jupyter/hub/api", "https://example.org/jupyter/hub/api"),
    ],
)
def test_api_url_accepts_the_public_url(given, expected):
    assert hub_api.normalize_api_url(given) == expected


def test_default_api_url_from_environment():
    assert hub_api.default_api_url({}) == hub_api.DEFAULT_API_URL
    assert hub_api.default_api_url({"JUPYTERHUB_URL": "http://h"}) == "http://h"
    assert hub_api.default_api_url({"JUPYTERHUB_URL": "http://h", "JUPYTERHUB_API_URL": "http://a/hub/api"}) == (
        "http://a/hub/api"
    )


def test_filtered_scopes_do_not_count():
    assert hub_api.missing_scopes(["list:users", "read:servers", "admin:server_state", "access:servers"]) == []
    assert hub_api.missing_scopes(["list:users!group=class", "read:servers", "admin:server_state"]) == ["list:users"]
    assert hub_api.missing_scopes([]) == ["list:users", "read:servers", "admin:server_state"]


def test_page_items_follows_pagination_and_accepts_plain_lists():
    page = {"items": [{"name": "a"}], "_pagination": {"offset": 0, "limit": 1, "total": 2, "next": {"offset": 1}}}
    assert hub_api.page_items(page) == ([{"name": "a"}], 1)
    last = {"items": [{"name": "b"}], "_pagination": {"offset": 1, "limit": 1, "total": 2, "next": None}}
    assert hub_api.page_items(last) == ([{"name": "b"}], None)
    assert hub_api.page_items([{"name": "c"}]) == ([{"name": "c"}], None)
    with pytest.raises(hub_api.HubAPIError, match="unexpected answer"):
        hub_api.page_items({"error": "?"})


def test_running_servers_come_from_the_servers_dicts_with_the_ids_their_state_recorded():
    models = [
        {
            "name": "alice",
            "servers": {
                "": {
                    "ready": True,
                    "state": {names.STATE_USER_ID: "4", names.STATE_USER_CREATED: "2026-01-02T03:04:05Z"},
                },
                "lab": {"ready": False, "pending": "spawn"},  # started before ids were recorded
            },
        },
        {"name": "bob", "servers": {}},
    ]
    alice = names.Identity("4", "2026-01-02T03:04:05Z")
    assert hub_api.running_servers(models) == {("alice", ""): alice, ("alice", "lab"): names.Identity()}
    assert hub_api.user_ids(models) == {"alice": alice}


def test_a_user_without_servers_key_means_the_token_cannot_see_them():
    with pytest.raises(hub_api.HubAPIError, match="read:servers"):
        hub_api.running_servers([{"name": "alice"}])


class FakeHub(BaseHTTPRequestHandler):
    """Just enough of the hub's API: /user and a paginated /users, one user per page."""

    users = [
        {"name": "alice", "servers": {"": {"state": {names.STATE_USER_ID: "1"}}}},
        {"name": "bob", "servers": {}},
        {"name": "carol", "servers": {"x": {}}},
    ]
    stopped_servers = {"bob": {"": {"stopped": True, "state": {names.STATE_USER_ID: "2"}}}}
    scopes = ["list:users", "read:servers", "admin:server_state"]

    def do_GET(self):  # noqa: N802 - the name http.server calls
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if self.headers["Authorization"] != "token secret":
            self._send(403, {"status": 403})
        elif url.path == "/hub/api/user":
            self._send(200, {"name": "cli", "scopes": self.scopes})
        elif url.path == "/hub/api/users":
            users = self.users
            if query.get("state") == ["active"]:
                users = [u for u in users if u["servers"]]
            if query.get("include_stopped_servers") == ["1"]:
                stopped = self.stopped_servers
                users = [{**u, "servers": {**u["servers"], **stopped.get(u["name"], {})}} for u in users]
            offset = int(query["offset"][0])
            following = {"offset": offset + 1} if offset + 1 < len(users) else None
            self._send(200, {"items": users[offset : offset + 1], "_pagination": {"next": following}})
        else:
            self._send(404, {})

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hub/api"
    server.shutdown()
    server.server_close()


def test_hub_client_reads_every_page(fake_hub):
    state = hub_api.HubClient(fake_hub, "secret").state(include_users=True)
    assert state.running == {("alice", ""): names.Identity("1"), ("carol", "x"): names.Identity()}
    assert state.names == {"alice", "bob", "carol"}
    assert state.ids == {"alice": names.Identity("1"), "bob": names.Identity("2")}  # bob's: a stopped server's
    assert hub_api.HubClient(fake_hub, "secret").state(include_users=False).names is None


def test_hub_client_refuses_a_bad_token_or_missing_scopes(fake_hub, monkeypatch):
    with pytest.raises(hub_api.HubAPIError, match="HTTP 403"):
        hub_api.HubClient(fake_hub, "wrong").state(include_users=False)
    monkeypatch.setattr(FakeHub, "scopes", ["list:users!group=x", "read:servers", "admin:server_state"])
    with pytest.raises(hub_api.HubAPIError, match="lacks the scopes list:users"):
        hub_api.HubClient(fake_hub, "secret").state(include_users=False)
    monkeypatch.setattr(FakeHub, "scopes", ["list:users", "read:servers"])
    with pytest.raises(hub_api.HubAPIError, match="lacks the scopes admin:server_state"):
        hub_api.HubClient(fake_hub, "secret").state(include_users=False)


def test_hub_client_says_when_the_hub_is_unreachable():
    with pytest.raises(hub_api.HubAPIError, match="cannot reach the hub API at http://127.0.0.1:9/hub/api"):
        hub_api.HubClient("http://127.0.0.1:9", "secret", timeout=5).state(include_users=False)


# -- doctor -------------------------------------------------------------------------------------------------------


def test_probe_names_cannot_be_a_users_objects():
    probes = doctor.probe_names("jupyter", "abcd1234")
    assert probes["net"] == "jupyter-doctor_abcd1234_net"
    templates = names.NameTemplates()
    for name in probes.values():
        assert names.is_valid_docker_name(name)
        assert name.startswith("jupyter-")
        # even for a user literally called "doctor", whose objects have their own names
        fields = names.template_fields("jupyter", "doctor", "")
        assert name not in vars(names.resource_names(templates, fields)).values()


def test_memory_probe_has_the_limit_without_swap_and_the_notebook_hardening():
    spec = doctor.memory_probe_spec("p", "img")
    assert spec.create["command"][:2] == ["python3", "-c"]
    assert spec.create["network_disabled"] is True
    assert spec.host_config["mem_limit"] == spec.host_config["memswap_limit"] == 64 * 2**20
    assert spec.host_config["network_mode"] == "none"
    assert spec.host_config["cap_drop"] == ["ALL"]
    assert spec.host_config["security_opt"] == ["no-new-privileges:true"]
    assert doctor.ALLOCATION > 2 * doctor.MEMORY_LIMIT


def test_cpu_and_hub_probes():
    cpu = doctor.cpu_probe_spec("p", "img")
    assert (cpu.host_config["cpu_quota"], cpu.host_config["cpu_period"]) == (50_000, 100_000)
    hub = doctor.hub_probe_spec("p", "img", "net", "http://172.17.0.1:8081/hub/api")
    assert hub.host_config["network_mode"] == "net"
    assert "network_disabled" not in hub.create
    assert hub.create["command"][-1] == "http://172.17.0.1:8081/hub/api"


@pytest.mark.parametrize(
    ("exit_code", "output", "status"),
    [(137, "", doctor.OK), (0, "", doctor.FAIL), (1, "Traceback\nMemoryError\n", doctor.FAIL)],
)
def test_judge_memory(exit_code, output, status):
    result = doctor.judge_memory(exit_code, output)
    assert result.status == status
    if exit_code == 1:
        assert "MemoryError" in result.detail


@pytest.mark.parametrize(
    ("output", "status"),
    [("50000 100000\n", doctor.OK), ("50000\n100000\n", doctor.OK), ("max 100000\n", doctor.FAIL), ("", doctor.FAIL)],
)
def test_judge_cpu_reads_cgroup_v1_and_v2(output, status):
    assert doctor.judge_cpu(0, output).status == status


def test_judge_hub_shows_the_error():
    assert doctor.judge_hub(0, "200\n", "u").status == doctor.OK
    failed = doctor.judge_hub(1, "Traceback\nURLError: refused\n", "u")
    assert (failed.status, failed.detail) == (doctor.FAIL, "u from a user network: URLError: refused")


# -- the CLI's own logic ------------------------------------------------------------------------------------------


def test_format_table_aligns_columns_without_trailing_spaces():
    table = cli.format_table([["alice", "x", ""], ["b", "longer", "1"]], ["USER", "N", "S"])
    assert table.splitlines() == ["USER   N       S", "alice  x", "b      longer  1"]
    assert cli.format_table([]) == ""


@pytest.mark.parametrize(
    ("size", "text"),
    [(None, "?"), (0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (12_345_678, "12.3 MB"), (5 * 10**15, "5000.0 TB")],
)
def test_format_size(size, text):
    assert cli.format_size(size) == text


def test_ls_rows_fill_empty_cells(resources):
    rows = cli.ls_rows(resources)
    assert rows[0] == ["alice", "-", "container", "notebook", "jupyter-alice", "running", ""]
    assert rows[1] == ["alice", "-", "volume", "home", "jupyter-alice_home", "", "12.3 MB"]
    summary = "3 user(s): 3 container(s) (1 running), 1 network(s), 3 volume(s) using 12.3 MB"
    assert cli.ls_summary(resources) == summary


def test_gc_rows():
    r = Resource(kind="network", name="jupyter-bob_net", id="n", user="bob", server="", role="network")
    assert cli.gc_rows([Orphan(r, "no running server")]) == [
        ["network", "jupyter-bob_net", "bob", "-", "no running server"]
    ]


def test_settings_default_to_the_spawners():
    settings = cli.hub_settings(Config())
    assert settings.prefix == "jupyter"
    assert settings.templates == names.NameTemplates()
    assert settings.service_images == {}


def test_settings_follow_the_class_hierarchy_like_traitlets():
    config = Config()
    config.DockerSpawner.image = "base:1"
    config.DockerSpawner.prefix = "hub"
    config.MultiUserSpawner.image = "mine:2"
    config.MultiUserSpawner.database_enabled = True
    config.MultiUserSpawner.database_image = "pg:16"
    config.Spawner.services = {"cache": {"preset": "redis"}}
    config.MultiUserSpawner.home_volume_name_template = "{prefix}-{user}{server_suffix}_home"
    settings = cli.hub_settings(config)
    assert (settings.image, settings.prefix) == ("mine:2", "hub")
    assert settings.service_images == {"db": "pg:16", "cache": "redis:7"}
    assert settings.templates.home_volume == "{prefix}-{user}{server_suffix}_home"


def test_a_bad_service_in_the_config_is_a_cli_error():
    config = Config()
    config.MultiUserSpawner.services = {"cache": {"preset": "redis", "port": "6379"}}
    with pytest.raises(cli.CLIError, match=r"services\['cache'\].port"):
        cli.hub_settings(config)


def test_objects_of_the_first_release_are_read_as_the_service_db():
    old = inventory.from_container(
        {"Id": "c", "Names": ["/jupyter-alice_db"], "Labels": legacy_lab("database", "alice")}
    )
    new = inventory.from_container(
        {"Id": "c", "Names": ["/jupyter-alice_db"], "Labels": names.labels("service", owner("alice"), "db")}
    )
    assert (old.role, old.service) == (new.role, new.service) == ("service", "db")
    assert inventory.belongs_to_hub(old, "jupyter", names.NameTemplates())


def test_settings_from_a_config_file_and_prefix_option(tmp_path):
    config_file = tmp_path / "jupyterhub_config.py"
    config_file.write_text("c = get_config()\nc.MultiUserSpawner.prefix = 'lab'\nc.Spawner.cmd = ['x']\n")
    args = cli.build_parser().parse_args(["ls", "-f", str(config_file)])
    assert cli.settings_from_args(args).prefix == "lab"
    args = cli.build_parser().parse_args(["ls", "-f", str(config_file), "--prefix", "other"])
    assert cli.settings_from_args(args).prefix == "other"
    with pytest.raises(cli.CLIError, match="must be"):
        cli.settings_from_args(cli.build_parser().parse_args(["ls", "--prefix", "Bad_Prefix"]))
    with pytest.raises(cli.CLIError, match="does not exist"):
        cli.settings_from_args(cli.build_parser().parse_args(["ls", "-f", str(tmp_path / "missing.py")]))


def test_gc_is_a_dry_run_that_keeps_volumes_unless_told_otherwise():
    args = cli.build_parser().parse_args(["gc"])
    assert (args.yes, args.volumes_of_deleted_users) == (False, False)
    args = cli.build_parser().parse_args(["gc", "--yes", "--volumes-of-deleted-users"])
    assert (args.yes, args.volumes_of_deleted_users) == (True, True)


def test_gc_without_a_token_is_an_error(monkeypatch, capsys):
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    assert cli.main(["gc", "--hub-url", "http://127.0.0.1:9/hub/api"]) == cli.EXIT_ERROR
    assert "JUPYTERHUB_API_TOKEN" in capsys.readouterr().err


def test_notebook_objects_sort_before_service_objects():
    def r(kind: str, role: str, name: str) -> Resource:
        return Resource(kind=kind, name=name, id=name, user="u", server="", role=role)

    unsorted = [r("volume", "service-data", "a"), r("container", "service", "b"), r("volume", "home", "c")]
    unsorted += [r("container", "notebook", "d"), r("network", "network", "e")]
    assert [x.name for x in sorted(unsorted, key=lambda x: x.sort_key)] == ["d", "b", "e", "c", "a"]


def test_ls_rows_without_sizes_leave_the_column_empty(resources):
    assert all(row[-1] == "" for row in cli.ls_rows(resources, with_sizes=False))


# -- removal order and failures, against a stand-in for the gateway ----------------------------------------------


class RecordingGateway:
    """Records the calls :func:`cleanup.remove_resources` makes; fails on names in ``broken``."""

    def __init__(self, broken: set[str] | None = None):
        self.calls: list[tuple[str, str]] = []
        self.broken = broken or set()

    async def _record(self, call: str, target: str) -> None:
        self.calls.append((call, target))
        if target in self.broken:
            raise cleanup.DockerGatewayError(f"{target} is busy")

    async def stop_container(self, name_or_id: str, timeout: int) -> bool:
        await self._record("stop", name_or_id)
        return True

    async def remove_container(self, name_or_id: str) -> None:
        await self._record("remove_container", name_or_id)

    async def remove_network(self, name: str) -> None:
        await self._record("remove_network", name)

    async def disconnect_network(self, network: str, container: str) -> None:
        await self._record("disconnect", f"{container} from {network}")

    async def remove_volume(self, name: str) -> None:
        await self._record("remove_volume", name)


def removable() -> list[Resource]:
    return [
        Resource(kind="volume", name="v", id="v", user="u", server="", role="home"),
        Resource(kind="network", name="n", id="n-id", user="u", server="", role="network"),
        Resource(kind="container", name="c", id="c-id", user="u", server="", role="notebook"),
    ]


async def test_containers_go_first_by_id_then_networks_then_volumes():
    gateway = RecordingGateway()
    report = await cleanup.remove_resources(gateway, removable(), hub_container="hub")
    assert gateway.calls == [
        ("stop", "c-id"),
        ("remove_container", "c-id"),
        ("disconnect", "hub from n-id"),
        ("remove_network", "n-id"),
        ("remove_volume", "v"),
    ]
    assert report.removed == ["container c", "network n", "volume v"]
    assert report.failed == []


async def test_a_failure_is_reported_and_the_rest_still_goes():
    gateway = RecordingGateway(broken={"n-id"})
    report = await cleanup.remove_resources(gateway, removable())
    assert report.removed == ["container c", "volume v"]
    assert report.failed == ["network n: n-id is busy"]


def test_a_failed_removal_makes_the_exit_status_non_zero(capsys):
    report = cleanup.RemovalReport(removed=["container c"], failed=["network n: busy"])
    assert cli.print_removal(report, sys.stdout) == cli.EXIT_PROBLEM
    assert capsys.readouterr().out.splitlines() == ["removed container c", "FAILED  network n: busy"]
    assert cli.print_removal(cleanup.RemovalReport(removed=["volume v"]), sys.stdout) == cli.EXIT_OK


# -- on a swarm ---------------------------------------------------------------------------------------------------

NODES = [
    {
        "ID": "m1",
        "Description": {"Hostname": "manager"},
        "Status": {"State": "ready"},
        "Spec": {"Availability": "active"},
    },
    {
        "ID": "w1",
        "Description": {"Hostname": "worker1"},
        "Status": {"State": "ready"},
        "Spec": {"Availability": "active"},
    },
    {
        "ID": "w2",
        "Description": {"Hostname": "worker2"},
        "Status": {"State": "down"},
        "Spec": {"Availability": "active"},
    },
    {
        "ID": "w3",
        "Description": {"Hostname": "worker3"},
        "Status": {"State": "ready"},
        "Spec": {"Availability": "drain"},
    },
]


def swarm_service(service_id: str, name: str, labels: dict) -> dict:
    return {"ID": service_id, "Spec": {"Name": name, "Labels": labels}}


def swarm_task(service_id: str, node: str, state: str, created: str, err: str = "") -> dict:
    return {"ServiceID": service_id, "NodeID": node, "CreatedAt": created, "Status": {"State": state, "Err": err}}


def record(name: str, labels: dict, node: str = "", node_name: str = "") -> dict:
    pin = {swarm.LABEL_NODE: node, swarm.LABEL_NODE_NAME: node_name} if node else {}
    return {"ID": f"cfg-{name}", "Spec": {"Name": name, "Labels": {**labels, **pin}}}


@pytest.fixture
def swarm_resources() -> list[Resource]:
    services = [
        swarm_service("s1", "jupyter-alice", lab("notebook", "alice")),
        swarm_service("s2", "jupyter-alice_db", {**lab("service", "alice"), names.LABEL_SERVICE: "db"}),
        swarm_service("s3", "not-ours", {"other": "x"}),
    ]
    tasks = [
        swarm_task("s1", "m1", "shutdown", "2026-01-01T00:00:00Z"),  # an earlier task, elsewhere
        swarm_task("s1", "w1", "running", "2026-01-02T00:00:00Z"),
        swarm_task("s2", "w2", "rejected", "2026-01-02T00:00:00Z", err="No such image: postgres:15"),
    ]
    networks = [{"Id": "n1", "Name": "jupyter-alice_net", "Labels": lab("network", "alice")}]
    records = [
        record("jupyter-alice_home", lab("home", "alice"), "w1", "worker1"),
        record("jupyter-bob_home", lab("home", "bob"), "m1", "manager"),
        record("jupyter-carol_home", lab("home", "carol")),  # never started
    ]
    sizes = {"jupyter-bob_home": 4096, "jupyter-alice_home": 1}  # this engine's df: only bob's is here
    return swarm_inventory.collect(services, tasks, NODES, networks, records, sizes, local_node="m1")


def test_swarm_services_carry_their_newest_tasks_node_and_state(swarm_resources):
    by_name = {r.name: r for r in swarm_resources}
    assert "not-ours" not in by_name
    notebook = by_name["jupyter-alice"]
    assert (notebook.kind, notebook.node, notebook.state, notebook.note) == ("service", "worker1", "running", "")
    db = by_name["jupyter-alice_db"]
    assert (db.node, db.state, db.service) == ("worker2", "rejected", "db")
    assert db.note == "task rejected: No such image: postgres:15"


def test_swarm_volumes_come_from_their_records_with_the_node_that_holds_them(swarm_resources):
    volumes = {r.name: r for r in swarm_resources if r.kind == inventory.KIND_VOLUME}
    assert volumes["jupyter-alice_home"].node == "worker1"
    # a size is known only for a volume on this engine's node (worker1's df is out of reach)
    assert volumes["jupyter-alice_home"].size is None
    assert (volumes["jupyter-bob_home"].node, volumes["jupyter-bob_home"].size) == ("manager", 4096)
    assert volumes["jupyter-carol_home"].node == ""
    assert volumes["jupyter-alice_home"].identity == names.Identity("1")


def test_swarm_services_without_a_running_server_are_orphans(swarm_resources):
    orphans = inventory.find_orphans(swarm_resources, hub_users(running=[]))
    assert {(o.resource.kind, o.resource.name) for o in orphans} == {
        ("service", "jupyter-alice"),
        ("service", "jupyter-alice_db"),
        ("network", "jupyter-alice_net"),
    }
    assert inventory.find_orphans(swarm_resources, hub_users(running=[("alice", "")], ids=IDS)) == []


def test_swarm_ls_rows_and_summary_show_nodes_and_volumes_per_node(swarm_resources):
    rows = cli.ls_rows(swarm_resources, with_sizes=True, with_nodes=True)
    assert ["alice", "-", "service", "notebook", "jupyter-alice", "worker1", "running", ""] in rows
    assert ["alice", "-", "network", "network", "jupyter-alice_net", "", "", ""] in rows
    assert ["bob", "-", "volume", "home", "jupyter-bob_home", "manager", "", "4.1 kB"] in rows
    assert ["carol", "-", "volume", "home", "jupyter-carol_home", "-", "", "?"] in rows
    assert len(cli.SWARM_LS_HEADERS) == len(rows[0])
    assert cli.ls_summary(swarm_resources) == (
        "3 user(s): 2 service(s) (1 running), 1 network(s), 3 volume(s) using 4.1 kB (1 on manager, 1 on worker1)"
    )


def test_swarm_json_has_services_with_nodes_and_one_host_json_has_no_services_key(swarm_resources, resources):
    alice = inventory.as_json(swarm_resources)["users"][0]["servers"][0]
    assert [(s["name"], s["node"], s["state"]) for s in alice["services"]] == [
        ("jupyter-alice", "worker1", "running"),
        ("jupyter-alice_db", "worker2", "rejected"),
    ]
    assert alice["volumes"][0]["node"] == "worker1"
    for user in inventory.as_json(resources)["users"]:
        for server in user["servers"]:
            assert "services" not in server
            assert all("node" not in item for item in server["containers"] + server["volumes"])


def test_swarm_gc_rows_name_the_node():
    service = Resource("service", "jupyter-alice", "s1", "alice", "", "notebook", node="worker1")
    assert cli.gc_rows([Orphan(service, "no running server")], with_nodes=True) == [
        ["service", "jupyter-alice", "alice", "-", "worker1", "no running server"]
    ]


def test_volumes_are_removed_on_their_node_or_kept_naming_a_node_that_is_out_of_reach(swarm_resources):
    volumes = [r for r in swarm_resources if r.kind == inventory.KIND_VOLUME]
    gone = Resource("volume", "jupyter-dan_home", "jupyter-dan_home", "dan", "", "home", node="old-node")
    pins = {"jupyter-alice_home": "w1", "jupyter-bob_home": "w2", "jupyter-dan_home": "left-id"}
    plans = {p.volume.name: p for p in swarm_inventory.plan_volume_removals([*volumes, gone], pins, NODES)}
    assert (plans["jupyter-alice_home"].action, plans["jupyter-alice_home"].node_id) == ("remove on its node", "w1")
    assert plans["jupyter-alice_home"].instruction == ""
    assert plans["jupyter-bob_home"].action == "keep"
    assert plans["jupyter-bob_home"].instruction == (
        "volume jupyter-bob_home lives on node worker2, which is down: it stays, with its record, until gc runs "
        "with the node back, or run `docker volume rm jupyter-bob_home` on worker2"
    )
    assert plans["jupyter-dan_home"].action == "keep"
    assert "lives on node old-node, which has left the swarm" in plans["jupyter-dan_home"].instruction
    assert plans["jupyter-carol_home"].action == "remove record"
    assert "no node recorded" in plans["jupyter-carol_home"].instruction


@pytest.mark.parametrize(
    "spawner_class, swarm",
    [
        ("multiuser-swarm", True),
        ("multiuser_spawner.swarm_spawner.MultiUserSwarmSpawner", True),
        ("multiuser", False),
        ("dockerspawner.SwarmSpawner", False),
    ],
)
def test_the_config_says_whether_the_hub_is_on_a_swarm(spawner_class, swarm):
    config = Config()
    config.JupyterHub.spawner_class = spawner_class
    assert cli.on_swarm(config) is swarm
    assert cli.hub_settings(config).swarm is swarm
    assert cli.hub_settings(Config()).swarm is False
    assert cli.hub_settings(Config(), swarm=True).swarm is True


def test_a_swarm_spawner_subclass_is_a_swarm_and_its_section_wins():
    from multiuser_spawner.swarm_spawner import MultiUserSwarmSpawner

    class SiteSpawner(MultiUserSwarmSpawner):
        pass

    config = Config()
    config.JupyterHub.spawner_class = SiteSpawner
    config.MultiUserSpawner.image = "local:1"
    config.MultiUserSwarmSpawner.image = "swarm:1"
    config.MultiUserSwarmSpawner.hub_container_name = "hub"
    config.Spawner.hub_connect_url = "http://hub:8081/"
    settings = cli.hub_settings(config)
    assert (settings.swarm, settings.image, settings.hub_container) == (True, "swarm:1", "hub")
    assert cli.swarm_hub_url(settings, "hub", None) == "http://hub:8081/hub/api"
    assert cli.swarm_hub_url(settings, "hub", "http://x/hub/api") == "http://x/hub/api"
    bare = cli.hub_settings(Config(), swarm=True)
    assert cli.swarm_hub_url(bare, "hubc", None) == "http://hubc:8081/hub/api"
    assert cli.swarm_hub_url(bare, "", None) == ""


def test_only_a_manager_can_answer_for_the_swarm():
    assert swarm_inventory.manager_problem({"Swarm": {"LocalNodeState": "active", "ControlAvailable": True}}) == ""
    assert "not part of a swarm" in swarm_inventory.manager_problem({"Swarm": {"LocalNodeState": "inactive"}})
    assert "worker" in swarm_inventory.manager_problem({"Swarm": {"LocalNodeState": "active"}})


def test_a_probe_service_is_one_task_pinned_to_its_node_labelled_as_the_hubs_with_no_user():
    labels = swarm_doctor.probe_labels("jupyter", "abcd")
    spec = swarm_doctor.probe_service_spec("jupyter-doctor_abcd_img1", "img:1", ["true"], "w1", labels, "net1", ["x"])
    template = spec["task_template"]
    assert template["Placement"] == {"Constraints": ["node.id==w1"]}
    assert template["RestartPolicy"] == {"Condition": "none"}
    assert template["Networks"] == [{"Target": "net1", "Aliases": ["x"]}]
    assert spec["labels"][swarm_doctor.LABEL_DOCTOR_RUN] == "abcd"
    probe = inventory.Resource("service", spec["name"], "s", "", "", names.ROLE_HELPER, hub="jupyter")
    # never a user's object: ls and gc pass it by
    assert not inventory.belongs_to_hub(probe, "jupyter", names.NameTemplates())
    assert "Networks" not in swarm_doctor.probe_service_spec("n", "i", ["true"], "w1", labels)["task_template"]


def test_nodes_down_fail_drained_are_set_aside():
    survey = swarm_doctor.survey_nodes(NODES)
    assert [n.name for n in survey.usable] == ["manager", "worker1"]
    verdict = swarm_doctor.judge_nodes(survey)
    assert verdict.failed
    assert verdict.detail.startswith("worker2 is down: users whose volumes live there cannot start")
    assert "not checked: worker3 is drained by an admin" in verdict.detail
    healthy = swarm_doctor.survey_nodes([n for n in NODES if n["ID"] != "w2"])
    assert swarm_doctor.judge_nodes(healthy).status == doctor.OK


def test_an_image_missing_on_one_node_fails_naming_that_node():
    manager, worker = swarm_doctor.Node("m1", "manager"), swarm_doctor.Node("w1", "worker1")
    outcomes = {
        manager: {"Status": {"State": "complete", "ContainerStatus": {"ContainerID": "c", "ExitCode": 0}}},
        worker: {"Status": {"State": "rejected", "Err": "No such image: img:1"}},
    }
    verdict = swarm_doctor.judge_image("image", "img:1", outcomes)
    assert verdict.failed
    assert verdict.detail.startswith("img:1 is missing on node(s) worker1: every server placed there fails")
    assert swarm_doctor.nodes_missing(outcomes) == [worker]
    # a container made from the image, whatever its command did, proves the image is there
    outcomes[worker] = {
        "Status": {"State": "failed", "Err": "exec: true: not found", "ContainerStatus": {"ContainerID": "c"}}
    }
    assert swarm_doctor.judge_image("image", "img:1", outcomes).status == doctor.OK
    outcomes[worker] = None
    assert "could not tell" in swarm_doctor.judge_image("image", "img:1", outcomes).detail


def test_overlay_and_hub_verdicts_say_what_to_open():
    server, client = swarm_doctor.Node("w1", "worker1"), swarm_doctor.Node("m1", "manager")
    done = {"Status": {"State": "complete"}}
    failed = {"Status": {"State": "failed", "Err": "task: non-zero exit (1)"}}
    serving = {"Status": {"State": "running"}}
    assert swarm_doctor.judge_overlay(server, {client: (done, "200\n")}, serving).status == doctor.OK
    verdict = swarm_doctor.judge_overlay(server, {client: (failed, "URLError: timed out\n")}, serving)
    assert verdict.failed and "from manager: URLError: timed out" in verdict.detail and "4789/udp" in verdict.detail
    # a server that never ran says nothing about the traffic, and says why
    rejected = {"Status": {"State": "rejected", "Err": "No such image: img:1"}}
    verdict = swarm_doctor.judge_overlay(server, {client: (failed, "gaierror")}, rejected)
    assert verdict.failed and verdict.detail.startswith(
        "the probe server on node worker1 did not run (task rejected: No such image: img:1)"
    )
    assert swarm_doctor.judge_hub("http://hub:8081/hub/api", server, done, "200\n").status == doctor.OK
    hub = swarm_doctor.judge_hub("http://hub:8081/hub/api", server, None, "")
    assert hub.failed and "no answer within" in hub.detail and "hub_ip" in hub.detail
