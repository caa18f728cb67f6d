"""A user's home volume: made (labelled) on first use, given to the image's user, never removed by a stop.

Docker fills a new, empty volume with the image's directory at the mount point the first time a container mounts
it, owner and mode included. When the image has its user's home there, a new volume is therefore already the
user's, and the ownership fix (a short-lived container per new volume) is wasted work. Whether Docker's copy does
the job depends only on the image, the mount path and the user, so the first new volume of each such combination
is checked (and fixed if needed) and the answer is kept for the hub's lifetime: a class of new users starting at
once runs one helper container, not one each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from .container_spec import HOME_ALREADY_OWNED, home_ownership_container, is_root_user
from .docker_gateway import DockerGateway, DockerGatewayError
from .local import check_claim
from .names import ROLE_HELPER, ROLE_HOME, Owner

OWNERSHIP_FIX_TIMEOUT = 60

OwnershipKey = tuple[str, str, str]  # (image id, mount path, image user)


class CopyOwnershipKnowledge:
    """Per (image id, mount path, user): whether Docker's copy of the image's directory already gives a new volume
    to the user. Learned from the first new volume; spawns that ask meanwhile wait for that answer."""

    def __init__(self) -> None:
        self._answers: dict[OwnershipKey, asyncio.Future[bool | None]] = {}

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


KNOWN_COPY_OWNERSHIP = CopyOwnershipKnowledge()


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
) -> bool:
    """Make the volume if it is missing; a new one is given to ``image_user``. True when the volume is new. A
    volume of that name that is another hub's or another user's is refused (:func:`.local.check_claim`)."""
    info, created = await gateway.ensure_volume(volume, owner.labels(ROLE_HOME))
    check_claim("volume", volume, info.get("Labels"), owner)
    if created and fix_ownership and not is_root_user(image_user):

        async def check_and_fix() -> bool:
            return await give_to_user(gateway, volume, image, mount_path, image_user, owner.labels(ROLE_HELPER))

        await knowledge.ensure_owned((image_id, mount_path, image_user), check_and_fix)
    return created


async def give_to_user(
    gateway: DockerGateway, volume: str, image: str, mount_path: str, owner: str, labels: dict[str, str]
) -> bool:
    """Give the volume's top directory to ``owner`` with a one-shot container (labelled ``labels``, so ``gc``
    finds one a crash left behind); True when it was theirs already."""
    spec = home_ownership_container(
        name=f"{volume}-init", image=image, volume=volume, mount_path=mount_path, owner=owner, labels=labels
    )
    exit_code, output = await gateway.run_to_completion(spec, OWNERSHIP_FIX_TIMEOUT)
    if exit_code != 0:
        # A half-initialised volume would stay root-owned for good: remove it so the next spawn retries.
        await gateway.remove_volume(volume)
        raise DockerGatewayError(
            f"could not give new home volume {volume} to user {owner!r} (exit {exit_code}): "
            f"{output.strip() or '(no output)'}"
        )
    return HOME_ALREADY_OWNED in output
