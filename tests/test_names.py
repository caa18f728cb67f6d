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

usernames = st.text(min_size=1, max_size=200)
servernames = st.one_of(st.just(""), st.text(min_size=1, max_size=200))
prefixes = st.from_regex(r"[a-z0-9]{1,8}(-[a-z0-9]{1,3})?", fullmatch=True)


def all_names(prefix: str, user: str, server: str) -> names.ResourceNames:
    return names.resource_names(names.NameTemplates(), names.template_fields(prefix, user, server))


@settings(max_examples=500)
@given(prefix=prefixes, user=usernames, server=servernames)
def test_every_name_is_a_valid_docker_name_within_bounds(prefix, user, server):
    resources = all_names(prefix[:16], user, server)
    for kind in ALL_KINDS:
        name = getattr(resources, kind)
        assert names.is_valid_docker_name(name), (kind, name)
        assert len(name) <= names.MAX_NAME_LENGTH


@settings(max_examples=500)
@given(a=st.tuples(usernames, servernames), b=st.tuples(usernames, servernames))
def test_distinct_users_and_servers_never_share_a_name(a, b):
    if a == b:
        return
    first, second = all_names("jupyter", *a), all_names("jupyter", *b)
    # no object of one may carry the name of the other's object of the same kind
    assert first.container != second.container
    assert first.network != second.network
    assert first.database_container != second.database_container
    assert first.database_volume != second.database_volume
    if a[0] != b[0]:
        assert first.home_volume != second.home_volume  # the home volume is per user


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
    resources = all_names(RECORDED["prefix"], record["username"], record["servername"])
    for kind in ALL_KINDS:
        assert getattr(resources, kind) == record[kind], kind


@pytest.mark.parametrize("prefix", ["", "Jupyter", "a_b", "x" * 17, "-a", "a--b"])
def test_bad_prefix_is_refused(prefix):
    with pytest.raises(ValueError, match="prefix"):
        names.validate_prefix(prefix)


def test_template_errors_name_the_setting():
    fields = names.template_fields("jupyter", "alice", "")
    with pytest.raises(ValueError, match="network_name_template.*unknown"):
        names.render_name("{prefix}-{unknown}", fields, "network_name_template")
    with pytest.raises(ValueError, match="home_volume_name_template.*not a valid Docker name"):
        names.render_name("{prefix}/{user}", fields, "home_volume_name_template")


def test_labels_carry_the_raw_names():
    assert names.labels(names.ROLE_HOME, "A.b", "") == {
        "org.multiuser-spawner.managed": "true",
        "org.multiuser-spawner.user": "A.b",
        "org.multiuser-spawner.server": "",
        "org.multiuser-spawner.role": "home",
    }
