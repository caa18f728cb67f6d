"""Names: valid for Docker, within bounds, never shared, and never changed silently between versions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multiuser_spawner import names

RECORDED = json.loads((Path(__file__).parent / "data" / "recorded_names.json").read_text())
ALL_KINDS = ("container", "home_volume", "network", "database_container", "database_volume")
SERVICES = ("db", "cache", "a-very-long-name")

usernames = st.text(min_size=1, max_size=200)
servernames = st.one_of(st.just(""), st.text(min_size=1, max_size=200))
prefixes = st.from_regex(r"[a-z0-9]{1,8}(-[a-z0-9]{1,3})?", fullmatch=True)


def all_names(prefix: str, user: str, server: str) -> names.ResourceNames:
    return names.resource_names(names.NameTemplates(), names.template_fields(prefix, user, server), SERVICES)


def by_kind(resources: names.ResourceNames) -> dict[str, str]:
    """Every name, by the kinds of the first release (its one database is the service ``db``) and each service's."""
    found = {
        "container": resources.container,
        "home_volume": resources.home_volume,
        "network": resources.network,
        "database_container": resources.services["db"].container,
        "database_volume": resources.services["db"].volume,
    }
    for key, service in resources.services.items():
        found[f"{key} container"] = service.container
        found[f"{key} volume"] = service.volume
    return found


@settings(max_examples=500)
@given(prefix=prefixes, user=usernames, server=servernames)
def test_every_name_is_a_valid_docker_name_within_bounds(prefix, user, server):
    for kind, name in by_kind(all_names(prefix, user, server)).items():
        assert names.is_valid_docker_name(name), (kind, name)
        assert len(name) <= names.MAX_NAME_LENGTH


@settings(max_examples=500)
@given(a=st.tuples(usernames, servernames), b=st.tuples(usernames, servernames))
def test_distinct_users_and_servers_never_share_a_name(a, b):
    if a == b:
        return
    first, second = by_kind(all_names("jupyter", *a)), by_kind(all_names("jupyter", *b))
    # no object of one may carry the name of any object of the other
    shared = set(first.values()) & set(second.values())
    if a[0] == b[0]:
        shared.discard(first["home_volume"])  # the home volume is per user
    assert not shared


@pytest.mark.parametrize(
    ("raw", "slug"),
    [
        ("alice", "alice"),
        ("a-b", "a-b"),
        ("a_b", "a-b--648fa9b3"),
        ("A.b", "a-b--4ff54a77"),
        ("élève", "eleve--a9991c64"),
        ("a--b", "a-b--90827a2e"),
    ],
)
def test_slugs_keep_plain_names_and_escape_the_rest(raw, slug):
    assert names.safe_slug(raw, names.MAX_USER_SLUG) == slug


def test_similar_usernames_get_different_names():
    volumes = {user: all_names("jupyter", user, "").home_volume for user in ("a-b", "a_b", "A.b", "a.b", "A-B")}
    assert len(set(volumes.values())) == len(volumes)


@pytest.mark.parametrize("record", RECORDED["names"], ids=lambda r: f"{r['username'][:12]}:{r['servername']}")
def test_names_match_those_recorded_from_the_first_release(record):
    resources = by_kind(all_names(RECORDED["prefix"], record["username"], record["servername"]))
    for kind in ALL_KINDS:
        assert resources[kind] == record[kind], kind


@pytest.mark.parametrize("prefix", ["", "a_b", "x" * 48, "-a", "a.b", "a/b"])
def test_bad_prefix_is_refused(prefix):
    with pytest.raises(ValueError, match="prefix"):
        names.validate_prefix(prefix)


@pytest.mark.parametrize("prefix", ["jupyter", "dockerspawner-test", "Jupyter", "a--b", "x" * 47])
def test_any_prefix_dockerspawner_takes_works(prefix):
    names.validate_prefix(prefix)
    for kind, name in by_kind(all_names(prefix, "a.very.long.user.name@example.org", "a-named-server")).items():
        assert names.is_valid_docker_name(name), (kind, name)


def test_long_names_are_shortened_with_a_hash_of_the_whole():
    short = "jupyter-alice_home"
    assert names.fit_name(short) == short
    long_a, long_b = "p" * 60 + "-alice_home", "p" * 60 + "-bob_home"
    assert len(names.fit_name(long_a)) == names.MAX_NAME_LENGTH
    assert names.fit_name(long_a) != names.fit_name(long_b)
    assert names.fit_name(long_a) == names.fit_name(long_a)


@pytest.mark.parametrize("service", ["", "Cache", "a_b", "db.x", "1db", "x" * 17])
def test_bad_service_names_are_refused(service):
    with pytest.raises(ValueError, match="service name"):
        names.validate_service_name(service)


def test_resource_names_survive_the_servers_state():
    resources = all_names("jupyter", "alice", "lab")
    assert names.ResourceNames.from_state(resources.as_state()) == resources


def test_template_errors_name_the_setting():
    fields = names.template_fields("jupyter", "alice", "")
    with pytest.raises(ValueError, match="network_name_template.*unknown"):
        names.render_name("{prefix}-{unknown}", fields, "network_name_template")
    with pytest.raises(ValueError, match="home_volume_name_template.*not a valid Docker name"):
        names.render_name("{prefix}/{user}", fields, "home_volume_name_template")


ALICE = names.Owner(hub="jupyter", user="alice", user_id="7")


def test_service_labels_carry_the_service():
    assert names.labels(names.ROLE_SERVICE, ALICE, "cache")["org.multiuser-spawner.service"] == "cache"


def test_labels_carry_the_hub_the_raw_names_and_the_user_id():
    owner = names.Owner(hub="jupyter-staging", user="A.b", user_id="12", user_created="2026-01-02T03:04:05.000006")
    assert owner.labels(names.ROLE_HOME) == {
        "org.multiuser-spawner.managed": "true",
        "org.multiuser-spawner.hub": "jupyter-staging",
        "org.multiuser-spawner.user": "A.b",
        "org.multiuser-spawner.user-id": "12",
        "org.multiuser-spawner.user-created": "2026-01-02T03:04:05.000006",
        "org.multiuser-spawner.server": "",
        "org.multiuser-spawner.role": "home",
    }


def test_an_owner_claims_its_own_objects_even_renamed_and_objects_of_earlier_releases_by_name():
    assert names.claim_problem(ALICE.labels(names.ROLE_HOME), ALICE) is None
    renamed = names.Owner(hub="jupyter", user="alicia", user_id="7")
    assert names.claim_problem(ALICE.labels(names.ROLE_HOME), renamed) is None
    new_keys = (names.LABEL_HUB, names.LABEL_USER_ID, names.LABEL_USER_CREATED)
    legacy = {k: v for k, v in ALICE.labels(names.ROLE_HOME).items() if k not in new_keys}
    assert names.claim_problem(legacy, ALICE) is None
    # not ours at all (e.g. DockerSpawner's volume): decided elsewhere
    assert names.claim_problem({}, ALICE) is None


def test_an_owner_never_claims_another_hubs_or_a_deleted_namesakes_objects():
    other_hub = names.Owner(hub="jupyter-staging", user="alice", user_id="7").labels(names.ROLE_HOME)
    assert "another hub" in names.claim_problem(other_hub, ALICE)
    namesake = names.Owner(hub="jupyter", user="alice", user_id="3").labels(names.ROLE_HOME)
    problem = names.claim_problem(namesake, ALICE)
    assert "id 3" in problem and "deleted" in problem
    # a hub database on SQLite gives a deleted user's id to the next user: the creation time tells them apart
    first = names.Owner(hub="jupyter", user="alice", user_id="7", user_created="2026-01-01T10:00:00.000001")
    second = names.Owner(hub="jupyter", user="alice", user_id="7", user_created="2026-03-01T10:00:00.000002")
    assert "deleted" in names.claim_problem(first.labels(names.ROLE_HOME), second)
    assert names.claim_problem(first.labels(names.ROLE_HOME), first) is None
    legacy_of_bob = {names.LABEL_MANAGED: "true", names.LABEL_USER: "staging-alice", names.LABEL_ROLE: "home"}
    assert "'staging-alice'" in names.claim_problem(legacy_of_bob, names.Owner("jupyter", "alice", "7"))
