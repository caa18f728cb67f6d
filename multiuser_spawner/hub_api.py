"""What the hub knows: which users exist and which of their servers run, from its REST API.

The parsing is pure and tested on literal dicts; :class:`HubClient` only adds HTTP (the standard library's, so the
CLI needs nothing beyond the spawner's own dependencies).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

from .inventory import HubUsers
from .names import STATE_USER_CREATED, STATE_USER_ID, Identity

PAGINATION_MEDIA_TYPE = "application/jupyterhub-pagination+json"
DEFAULT_API_URL = "http://127.0.0.1:8000/hub/api"
PAGE_SIZE = 200
#: Without these, users' servers would be missing from the answers and every server would look stopped, and a
#: renamed user (known only by the id their servers' state records) would look deleted.
REQUIRED_SCOPES = ("list:users", "read:servers", "admin:server_state")


class HubAPIError(RuntimeError):
    """The hub could not be asked, or its answer cannot be trusted; the message says why."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        #: the HTTP status of a refusal, if the hub answered
        self.status = status


def default_api_url(environ: Mapping[str, str] = os.environ) -> str:
    """``JUPYTERHUB_API_URL`` (set for services the hub runs), else ``JUPYTERHUB_URL``, else the local default."""
    return environ.get("JUPYTERHUB_API_URL") or environ.get("JUPYTERHUB_URL") or DEFAULT_API_URL


def normalize_api_url(url: str) -> str:
    """Accept the hub's public URL too: ``https://hub.example.org`` → ``https://hub.example.org/hub/api``."""
    url = url.rstrip("/")
    if not url.endswith("/api"):
        url = f"{url}/api" if url.endswith("/hub") else f"{url}/hub/api"
    return url


def missing_scopes(token_scopes: Iterable[str]) -> list[str]:
    """Required scopes the token lacks. A filtered scope (``list:users!group=x``) does not count: with it the hub
    would hide other users' servers, which would then look like orphans."""
    have = set(token_scopes)
    return [scope for scope in REQUIRED_SCOPES if scope not in have]


def page_items(payload: Any) -> tuple[list[dict[str, Any]], int | None]:
    """The items of one page of a list answer and the offset of the next page (``None``: this was the last).

    A hub that ignores the pagination media type answers with a plain list, which then is everything.
    """
    if isinstance(payload, list):
        return payload, None
    if not isinstance(payload, dict) or not isinstance(payload.get("items"), list):
        raise HubAPIError(f"unexpected answer from the hub (not a list of users): {str(payload)[:200]}")
    following = (payload.get("_pagination") or {}).get("next")
    return payload["items"], (int(following["offset"]) if following else None)


def running_servers(user_models: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Identity]:
    """``(user, server)`` for every server in the users' ``servers`` dicts (the hub lists only active ones there
    unless asked for stopped ones too; ``""`` is the default server), each with the user's id as the server's state
    recorded it (unknown when it did not)."""
    running = {}
    for model in user_models:
        for server, server_model in _servers(model).items():
            running[(model["name"], server)] = _recorded_identity(server_model)
    return running


def user_ids(user_models: Iterable[Mapping[str, Any]]) -> dict[str, Identity]:
    """User name -> identity, for every user one of whose servers' state (running or not) recorded it."""
    ids = {}
    for model in user_models:
        for server_model in _servers(model).values():
            identity = _recorded_identity(server_model)
            if identity.known:
                ids[model["name"]] = identity
    return ids


def _servers(model: Mapping[str, Any]) -> Mapping[str, Any]:
    if "servers" not in model:
        # The hub leaves the key out when the token may not read servers: guessing "none" would be fatal.
        raise HubAPIError(
            f"the hub did not show the servers of user {model.get('name')!r}: the token needs the read:servers scope"
        )
    return model["servers"] or {}


def _recorded_identity(server_model: Mapping[str, Any]) -> Identity:
    """The user's identity (id and creation time) as the server's state recorded it."""
    state = server_model.get("state") or {}
    return Identity(str(state.get(STATE_USER_ID) or ""), str(state.get(STATE_USER_CREATED) or ""))


class HubClient:
    def __init__(self, api_url: str, token: str, timeout: float = 30):
        self.api_url = normalize_api_url(api_url)
        self.token = token
        self.timeout = timeout

    def get(self, path: str, params: Mapping[str, str | int] | None = None) -> Any:
        url = f"{self.api_url}{path}"
        if params:
            url = f"{url}?{urllib.parse.urlencode(params)}"
        headers = {"Authorization": f"token {self.token}", "Accept": f"{PAGINATION_MEDIA_TYPE}, application/json"}
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as e:
            raise HubAPIError(
                f"the hub refused GET {url}: HTTP {e.code} {e.reason}{_refusal_hint(e.code)}", status=e.code
            ) from e
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise HubAPIError(f"cannot reach the hub API at {self.api_url}: {reason}") from e
        try:
            return json.loads(body)
        except ValueError as e:
            raise HubAPIError(f"{url} did not answer with JSON: is it a JupyterHub API URL?") from e

    def check_token(self) -> None:
        """Fail unless the token may list all users and read all servers."""
        model = self.get("/user")
        lacking = missing_scopes(model.get("scopes") or [])
        if lacking:
            raise HubAPIError(
                f"the API token lacks the scopes {', '.join(lacking)} (unfiltered); it has: "
                f"{', '.join(model.get('scopes') or []) or 'none'}"
            )

    def list_users(self, state: str | None = None, stopped_servers: bool = False) -> list[dict[str, Any]]:
        """All users (``state="active"``: only those with a server running, starting or stopping), page by page;
        with ``stopped_servers``, their stopped servers (and so their state) too."""
        users: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None:
            params: dict[str, str | int] = {"offset": offset, "limit": PAGE_SIZE}
            if state:
                params["state"] = state
            if stopped_servers:
                params["include_stopped_servers"] = 1
            items, offset = page_items(self.get("/users", params))
            users.extend(items)
        return users

    def group_members(self, group: str) -> list[str]:
        try:
            model = self.get(f"/groups/{urllib.parse.quote(group, safe='')}")
        except HubAPIError as e:
            if e.status == 404:
                raise HubAPIError(f"the hub has no group {group!r}") from e
            raise
        return list(model.get("users") or [])

    def user(self, name: str) -> dict[str, Any]:
        try:
            return self.get(f"/users/{urllib.parse.quote(name, safe='')}")
        except HubAPIError as e:
            if e.status == 404:
                raise HubAPIError(f"the hub has no user {name!r}") from e
            raise

    def state(self, include_users: bool) -> HubUsers:
        """The running servers; with ``include_users``, every user's name and (where recorded) id too."""
        self.check_token()
        running = running_servers(self.list_users(state="active"))
        if not include_users:
            return HubUsers(running=running)
        everyone = self.list_users(stopped_servers=True)
        return HubUsers(running=running, names=frozenset(u["name"] for u in everyone), ids=user_ids(everyone))


def _refusal_hint(status: int) -> str:
    if status in (401, 403):
        return (
            " (is JUPYTERHUB_API_TOKEN a valid token with the scopes list:users, read:servers and admin:server_state?)"
        )
    if status == 404:
        return " (is the URL the hub's API, ending in /hub/api?)"
    return ""
