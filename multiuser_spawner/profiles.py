"""Profiles: named sets of spawner settings, each open to some hub groups, one of which a user picks at spawn.

Pure functions: checking the admin's list, filtering it for a user, rendering the choice, and resolving what a
user sent (from the form or the REST API) to one profile, refusing anything else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from html import escape
from typing import Any

PROFILE_FIELDS = {"slug", "display_name", "description", "groups", "default", "spawner_override"}
_SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
OPTION_KEY = "profile"


class ProfileError(ValueError):
    """A profile in the configuration is wrong; the message names the profile and the field."""


class ProfileChoiceError(ValueError):
    """What a user sent does not name a profile they may use."""


@dataclass(frozen=True)
class Profile:
    slug: str
    display_name: str
    description: str = ""
    groups: tuple[str, ...] = ()
    default: bool = False
    spawner_override: Mapping[str, Any] = field(default_factory=dict)

    def allows(self, user_groups: Iterable[str]) -> bool:
        """Open to everyone when it names no groups, else to members of any of them."""
        return not self.groups or bool(set(self.groups) & set(user_groups))


def parse_profiles(
    raw: list[Any], settable: Iterable[str], allowed_images: Iterable[str] | Mapping[str, str] | None = None
) -> list[Profile]:
    """Check the admin's ``profiles`` list and return it as :class:`Profile` objects.

    ``settable`` is every setting a ``spawner_override`` may set. ``allowed_images``, when given and not empty,
    is what an overridden ``image`` must name: a list of images, or (DockerSpawner's form) a dict of aliases to
    images, where a profile names the alias and gets the image it stands for.
    """
    settable = set(settable)
    images = image_aliases(allowed_images)
    profiles = [_parse_one(index, entry, settable, images) for index, entry in enumerate(raw)]
    seen: dict[str, int] = {}
    for index, profile in enumerate(profiles):
        if profile.slug in seen:
            raise ProfileError(f"{_where(index, profile.slug)}: slug is already used by profiles[{seen[profile.slug]}]")
        seen[profile.slug] = index
    return profiles


def image_aliases(allowed_images: Iterable[str] | Mapping[str, str] | None) -> dict[str, str]:
    """``allowed_images`` as alias → image; a list's images are their own aliases."""
    if isinstance(allowed_images, Mapping):
        return dict(allowed_images)
    return {image: image for image in allowed_images or ()}


def _where(index: int, slug: Any = None) -> str:
    return f"c.MultiUserSpawner.profiles[{index}]" + (f" ({slug!r})" if slug else "")


def _parse_one(index: int, entry: Any, settable: set[str], images: dict[str, str]) -> Profile:
    if not isinstance(entry, Mapping):
        raise ProfileError(f"{_where(index)}: must be a dict, not {type(entry).__name__}")
    slug = entry.get("slug")
    where = _where(index, slug)
    unknown = set(entry) - PROFILE_FIELDS
    if unknown:
        raise ProfileError(f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(PROFILE_FIELDS)}")
    if not isinstance(slug, str) or not _SLUG.fullmatch(slug):
        raise ProfileError(f"{where}: field 'slug' must be lowercase letters, digits and single dashes")
    display_name = entry.get("display_name", slug)
    description = entry.get("description", "")
    for name, value in (("display_name", display_name), ("description", description)):
        if not isinstance(value, str):
            raise ProfileError(f"{where}: field {name!r} must be a string")
    groups = entry.get("groups", [])
    if isinstance(groups, str) or not isinstance(groups, list | tuple) or not all(isinstance(g, str) for g in groups):
        raise ProfileError(f"{where}: field 'groups' must be a list of hub group names")
    default = entry.get("default", False)
    if not isinstance(default, bool):
        raise ProfileError(f"{where}: field 'default' must be true or false")
    override = entry.get("spawner_override", {})
    if not isinstance(override, Mapping):
        raise ProfileError(f"{where}: field 'spawner_override' must be a dict of spawner settings")
    for key in override:
        if key not in settable:
            raise ProfileError(f"{where}: field 'spawner_override' sets {key!r}, which is not a spawner setting")
    override = dict(override)
    image = override.get("image")
    if image is not None and images:
        if image not in images:
            raise ProfileError(
                f"{where}: field 'spawner_override' sets image {image!r}, which is not in allowed_images "
                f"(one of {sorted(images)})"
            )
        override["image"] = images[image]  # DockerSpawner's meaning: the alias stands for its image
    return Profile(slug, display_name, description, tuple(groups), default, override)


def profiles_for(profiles: list[Profile], user_groups: Iterable[str]) -> list[Profile]:
    user_groups = set(user_groups)
    return [p for p in profiles if p.allows(user_groups)]


def default_profile(available: list[Profile]) -> Profile | None:
    """The first profile marked default among those available, else the first available."""
    for profile in available:
        if profile.default:
            return profile
    return available[0] if available else None


def choose(available: list[Profile], all_profiles: list[Profile], user_options: Mapping[str, Any]) -> Profile:
    """The profile ``user_options`` picks (its default when it names none); refuse an unknown slug, a profile the
    user may not use, and any field other than ``profile``."""
    extra = set(user_options) - {OPTION_KEY}
    if extra:
        raise ProfileChoiceError(f"unknown option(s): {', '.join(sorted(map(str, extra)))}")
    slug = user_options.get(OPTION_KEY)
    if slug is None:
        chosen = default_profile(available)
        if chosen is None:
            raise ProfileChoiceError("no profile is available to you; ask an admin to add you to a group")
        return chosen
    if not isinstance(slug, str):
        raise ProfileChoiceError("'profile' must be a profile's slug (a string)")
    by_slug = {p.slug: p for p in available}
    if slug in by_slug:
        return by_slug[slug]
    if any(p.slug == slug for p in all_profiles):
        raise ProfileChoiceError(f"profile {slug!r} is not available to you")
    raise ProfileChoiceError(f"there is no profile {slug!r}")


def options_from_form(formdata: Mapping[str, list[str]]) -> dict[str, Any]:
    """The spawn form posts ``profile=<slug>``; any other field is passed on, so :func:`choose` refuses it."""
    options: dict[str, Any] = {}
    for key, values in formdata.items():
        if key == "_xsrf":  # the hub's own form token
            continue
        options[key] = values[0] if len(values) == 1 else list(values)
    return options


def render_form(available: list[Profile]) -> str:
    """The spawn page's choice: one native radio per profile (so keys and screen readers work), escaped, in the
    hub's own Bootstrap look. Empty when there is nothing to choose."""
    if len(available) < 2:
        return ""
    chosen = default_profile(available)
    items = "\n".join(_render_item(profile, profile is chosen) for profile in available)
    return (
        '<fieldset class="multiuser-profiles">\n'
        '<legend class="form-label fs-5">Choose a server profile</legend>\n'
        f"{items}\n"
        "</fieldset>"
    )


def _render_item(profile: Profile, checked: bool) -> str:
    slug = escape(profile.slug, quote=True)
    element_id = f"profile-{slug}"
    description = (
        f'<div class="form-text" id="{element_id}-description">{escape(profile.description)}</div>'
        if profile.description
        else ""
    )
    described_by = f' aria-describedby="{element_id}-description"' if profile.description else ""
    return (
        '<div class="form-check mb-2">'
        f'<input class="form-check-input" type="radio" name="{OPTION_KEY}" id="{element_id}" value="{slug}"'
        f"{' checked' if checked else ''}{described_by}>"
        f'<label class="form-check-label fw-semibold" for="{element_id}">{escape(profile.display_name)}</label>'
        f"{description}"
        "</div>"
    )
