"""Profiles as pure logic: checking the admin's list, filtering by group, the form, resolving a choice."""

from __future__ import annotations

import pytest

from multiuser_spawner import profiles as p

SETTABLE = {"cpu_limit", "mem_limit", "image", "database_enabled", "environment"}
RAW = [
    {
        "slug": "small",
        "display_name": "Small",
        "groups": ["students"],
        "default": True,
        "spawner_override": {"cpu_limit": 0.5, "mem_limit": "512M"},
    },
    {
        "slug": "db",
        "display_name": "Small + database",
        "groups": ["students"],
        "spawner_override": {"database_enabled": True},
    },
    {
        "slug": "large",
        "display_name": "Large <staff>",
        "description": "1 CPU & 1G",
        "groups": ["staff"],
        "spawner_override": {"cpu_limit": 1.0, "mem_limit": "1G"},
    },
    {"slug": "open", "display_name": "Open to all"},
]
PROFILES = p.parse_profiles(RAW, SETTABLE)


def test_parse_keeps_every_field():
    assert PROFILES[2] == p.Profile(
        slug="large",
        display_name="Large <staff>",
        description="1 CPU & 1G",
        groups=("staff",),
        default=False,
        spawner_override={"cpu_limit": 1.0, "mem_limit": "1G"},
    )
    assert PROFILES[3] == p.Profile(slug="open", display_name="Open to all")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("small", r"profiles\[0\]: must be a dict"),
        ({"display_name": "x"}, r"profiles\[0\]: field 'slug'"),
        ({"slug": "Big One"}, r"profiles\[0\] \('Big One'\): field 'slug'"),
        ({"slug": "a", "groups": "staff"}, r"\('a'\): field 'groups'"),
        ({"slug": "a", "default": "yes"}, r"\('a'\): field 'default'"),
        ({"slug": "a", "display_name": 3}, r"\('a'\): field 'display_name'"),
        ({"slug": "a", "spawner_override": {"cpu_limt": 1}}, r"\('a'\): field 'spawner_override' sets 'cpu_limt'"),
        ({"slug": "a", "kubespawner_override": {}}, r"\('a'\): unknown field"),
    ],
)
def test_bad_profiles_name_the_profile_and_the_field(entry, message):
    with pytest.raises(p.ProfileError, match=message):
        p.parse_profiles([entry], SETTABLE)


def test_duplicate_slug_and_image_outside_allowed_images():
    with pytest.raises(p.ProfileError, match=r"profiles\[1\] \('a'\): slug is already used by profiles\[0\]"):
        p.parse_profiles([{"slug": "a"}, {"slug": "a"}], SETTABLE)
    with pytest.raises(p.ProfileError, match="image 'evil:1', which is not in allowed_images"):
        p.parse_profiles([{"slug": "a", "spawner_override": {"image": "evil:1"}}], SETTABLE, ["good:1"])


def test_profiles_for_groups():
    assert [x.slug for x in p.profiles_for(PROFILES, ["students"])] == ["small", "db", "open"]
    assert [x.slug for x in p.profiles_for(PROFILES, ["staff"])] == ["large", "open"]
    assert [x.slug for x in p.profiles_for(PROFILES, [])] == ["open"]


def test_choose_default_and_explicit():
    students = p.profiles_for(PROFILES, ["students"])
    assert p.choose(students, PROFILES, {}).slug == "small"
    assert p.choose(students, PROFILES, {"profile": "db"}).slug == "db"
    staff = p.profiles_for(PROFILES, ["staff"])
    assert p.choose(staff, PROFILES, {}).slug == "large"  # no default among staff's: the first


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"profile": "large"}, "profile 'large' is not available to you"),
        ({"profile": "nope"}, "there is no profile 'nope'"),
        ({"profile": ["small"]}, "must be a profile's slug"),
        ({"profile": "small", "cpu_limit": "8"}, r"unknown option\(s\): cpu_limit"),
        ({"image": "evil"}, r"unknown option\(s\): image"),
    ],
)
def test_choose_refuses_tampered_choices(options, message):
    students = p.profiles_for(PROFILES, ["students"])
    with pytest.raises(p.ProfileChoiceError, match=message):
        p.choose(students, PROFILES, options)


def test_choose_with_nothing_available():
    with pytest.raises(p.ProfileChoiceError, match="no profile is available"):
        p.choose([], PROFILES[:1], {})


def test_form_is_escaped_keyboard_usable_and_preselects_the_default():
    html = p.render_form(p.profiles_for(PROFILES, ["staff"]))
    assert "Large &lt;staff&gt;" in html and "1 CPU &amp; 1G" in html
    assert "<staff>" not in html
    assert html.count('type="radio"') == 2
    assert '<label class="form-check-label fw-semibold" for="profile-large">' in html
    assert 'id="profile-large" value="large" checked aria-describedby="profile-large-description"' in html
    assert "<fieldset" in html and "<legend" in html


def test_no_form_for_a_single_choice():
    assert p.render_form(p.profiles_for(PROFILES, [])) == ""


def test_options_from_form_passes_every_field_on():
    assert p.options_from_form({"profile": ["db"], "_xsrf": ["t"]}) == {"profile": "db"}
    assert p.options_from_form({"profile": ["db"], "x": ["1", "2"]}) == {"profile": "db", "x": ["1", "2"]}


def test_allowed_images_as_a_dict_maps_a_profiles_alias_to_its_image():
    aliases = {"course": "registry.example.org/course:2024", "gpu": "registry.example.org/gpu:1"}
    raw = [{"slug": "a", "spawner_override": {"image": "gpu", "cpu_limit": 1.0}}]
    (profile,) = p.parse_profiles(raw, SETTABLE, aliases)
    assert profile.spawner_override == {"image": "registry.example.org/gpu:1", "cpu_limit": 1.0}
    assert raw[0]["spawner_override"]["image"] == "gpu"  # the admin's own list is left as it was
    # a profile names an alias, as a user does in DockerSpawner's form; the image behind it is not an alias
    with pytest.raises(p.ProfileError, match=r"which is not in allowed_images \(one of \['course', 'gpu'\]\)"):
        p.parse_profiles(
            [{"slug": "b", "spawner_override": {"image": "registry.example.org/gpu:1"}}], SETTABLE, aliases
        )
    # a list's images are their own aliases
    (listed,) = p.parse_profiles([{"slug": "c", "spawner_override": {"image": "good:1"}}], SETTABLE, ["good:1"])
    assert listed.spawner_override["image"] == "good:1"


def test_the_spawner_starts_the_image_a_profiles_alias_stands_for():
    from types import SimpleNamespace

    from traitlets.config import Config

    from multiuser_spawner import MultiUserSpawner

    config = Config()
    config.MultiUserSpawner.image = "registry.example.org/base:1"
    config.MultiUserSpawner.allowed_images = {
        "base": "registry.example.org/base:1",
        "gpu": "registry.example.org/gpu:1",
    }
    config.MultiUserSpawner.profiles = [
        {"slug": "cpu", "default": True},
        {"slug": "gpu", "spawner_override": {"image": "gpu"}},
    ]
    spawner = MultiUserSpawner(config=config)
    spawner.user = SimpleNamespace(name="alice", groups=[])
    spawner.check_settings()
    chosen = spawner.apply_profile({"profile": "gpu"})
    assert chosen.slug == "gpu"
    assert spawner.image == "registry.example.org/gpu:1"
