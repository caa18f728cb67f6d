"""A user's home volume: made (labelled) on first use, given to the image's user, never removed by a stop.

Docker fills an empty volume with the image's directory at the mount point when a container mounts it, owner and
mode included. When the image has its user's home there, a new volume is therefore already the user's; when it
does not (no such directory, or one root owns), the volume's top directory is root's and a short-lived helper
container gives it to the user.

Whether a volume needs that is decided by the volume's state, never by whether this spawn made it: a spawn
interrupted before the helper finished (a hub killed, an engine that stopped answering, a helper that hung) leaves
a volume that exists and is still root's, and the next spawn must fix it. So the helper runs for a new volume and
once per existing volume per hub lifetime (it only changes the owner of the top directory when it is not the
user's), and every one of its failures is a spawn error that says what failed, after which the next spawn tries
again.

Two things keep that cheap. Whether Docker's copy does the job depends only on the image, the mount path and the
user, so the first new volume of each such combination is checked and the answer is kept for the hub's lifetime:
a class of new users starting at once runs one helper container, not one each, and volumes of such an image are
not checked again. And a volume found to be its user's is remembered (by name and creation time) until the hub
restarts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from .container_spec import HOME_ALREADY_OWNED, home_ownership_container, is_root_user
from .docker_gateway import DockerGateway, DockerGatewayError, ensure_ours
from .local import check_claim
from .names import ROLE_HELPER, ROLE_HOME, Owner, fit_name

#: seconds the ownership helper may take; a helper that takes longer fails the spawn (and the next one retries)
OWNERSHIP_FIX_TIMEOUT = 60

OwnershipKey = tuple[str, str, str]  # (image id, mount path, image user)
VolumeIdentity = tuple[str, str, str, str]  # (volume name, its creation time, mount path, image user)


class CopyOwnershipKnowledge:
    """Per (image id, mount path, user): whether Docker's copy of the image's directory already gives a new volume
    to the user. Learned from the first new volume; spawns that ask meanwhile wait for that answer."""

    def __init__(self) -> None:
        self._answers: dict[OwnershipKey, asyncio.Future[bool | None]] = {}

    def copy_gives_ownership(self, key: OwnershipKey) -> bool:
        """True only when a new volume of this image was found already its user's by Docker's copy alone."""
        answer = self._answers.get(key)
        return answer is not None and answer.done() and answer.result() is True

    async def ensure_owned(self, key: OwnershipKey, check_and_fix: Callable[[], Awaitable[bool]]) -> bool:
        """Make sure a new volume belongs to the user, running ``check_and_fix`` (which fixes the volume and
        returns whether it was already owned) only while that is not known to be the case. True when skipped."""
        answer = self._answers.get(key)
        if answer is None:
            answer = self._answers[key] = asyncio.get_running_loop().create_future()
            try:
                already_owned = await check_and_fix()
            except BaseException:
                del self._answers[key]  # nothing learned: the next new volume checks again
                answer.set_result(None)
                raise
            answer.set_result(already_owned)
            return False
        if await asyncio.shield(answer) is True:
            return True
        await check_and_fix()  # this image needs the fix (or its first check failed): fix this volume too
        return False


class CheckedHomes:
    """The home volumes found (or made) their user's while this hub runs, and one lock per volume, so that two
    servers of one user starting together run one helper, not two under the same name."""

    def __init__(self) -> None:
        self._checked: set[VolumeIdentity] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, volume: str) -> asyncio.Lock:
        return self._locks.setdefault(volume, asyncio.Lock())

    def __contains__(self, identity: VolumeIdentity) -> bool:
        return identity in self._checked

    def add(self, identity: VolumeIdentity) -> None:
        self._checked.add(identity)


KNOWN_COPY_OWNERSHIP = CopyOwnershipKnowledge()
CHECKED_HOMES = CheckedHomes()


async def ensure_home_volume(
    gateway: DockerGateway,
    *,
    volume: str,
    owner: Owner,
    image: str,
    image_id: str,
    image_user: str,
    mount_path: str,
    fix_ownership: bool,
    knowledge: CopyOwnershipKnowledge = KNOWN_COPY_OWNERSHIP,
    checked: CheckedHomes = CHECKED_HOMES,
    timeout: float | None = None,
) -> bool:
    """Make the volume if it is missing and make sure its top directory is ``image_user``'s. True when the volume
    is new. A volume of that name that is another hub's or another user's is refused (:func:`.local.check_claim`).
    Raises :class:`DockerGatewayError`, saying what failed, when it cannot; the volume is kept (it may hold the
    user's files) and the next call fixes it."""
    info, created = await gateway.ensure_volume(volume, owner.labels(ROLE_HOME))
    check_claim("volume", volume, info.get("Labels"), owner)
    if not fix_ownership or is_root_user(image_user):
        return created
    identity = (volume, str(info.get("CreatedAt", "")), mount_path, image_user)
    key = (image_id, mount_path, image_user)

    async def check_and_fix() -> bool:
        return await give_to_user(gateway, volume, image, mount_path, image_user, owner, timeout)

    async with checked.lock(volume):
        if identity in checked:
            return created
        if created:
            await knowledge.ensure_owned(key, check_and_fix)
        elif not knowledge.copy_gives_ownership(key):
            # An existing volume may be one an interrupted spawn left root's, so its state decides, not its age.
            # (Skipped when Docker's copy of this image's home gives a volume to the user: a volume such a spawn
            # left is either still empty, and the next mount copies, or was copied into already.)
            await check_and_fix()
        checked.add(identity)
    return created


def helper_name(volume: str) -> str:
    return fit_name(f"{volume}-init")


async def give_to_user(
    gateway: DockerGateway,
    volume: str,
    image: str,
    mount_path: str,
    user: str,
    owner: Owner,
    timeout: float | None = None,
) -> bool:
    """Give the volume's top directory to the image's ``user`` with a one-shot container, labelled as ``owner``'s
    helper (so ``ls`` and ``gc`` see one a crash left behind); True when it was theirs already."""
    name = helper_name(volume)
    failed = f"could not give home volume {volume} to user {user!r}"
    retry = "the volume is kept and the next start tries again"
    try:
        await remove_leftover_helper(gateway, name, owner)
        spec = home_ownership_container(
            name=name, image=image, volume=volume, mount_path=mount_path, owner=user, labels=owner.labels(ROLE_HELPER)
        )
        exit_code, output = await gateway.run_to_completion(spec, OWNERSHIP_FIX_TIMEOUT if timeout is None else timeout)
    except DockerGatewayError as e:
        raise DockerGatewayError(f"{failed}: {e}; {retry}", e.status_code) from e
    if exit_code != 0:
        raise DockerGatewayError(
            f"{failed}: its helper container {name} exited with code {exit_code}; its output: "
            f"{output.strip() or '(none)'}; {retry}"
        )
    return HOME_ALREADY_OWNED in output


async def remove_leftover_helper(gateway: DockerGateway, name: str, owner: Owner) -> None:
    """A helper of this owner's under this name was left by a hub that died while it ran (this hub runs one per
    volume at a time): remove it. A container under this name that is not ours, or another hub's or user's, is
    refused, never removed."""
    leftover = await gateway.inspect_container(name)
    if leftover is not None:
        ensure_ours(leftover)
        check_claim("container", name, leftover["Config"].get("Labels"), owner)
        await gateway.remove_container(leftover["Id"])
