"""A user's home volume: made (labelled) on first use, given to the image's user, never removed by a stop."""

from __future__ import annotations

from .container_spec import home_ownership_container, is_root_user
from .docker_gateway import DockerGateway, DockerGatewayError
from .names import ROLE_HOME, labels

OWNERSHIP_FIX_TIMEOUT = 60


async def ensure_home_volume(
    gateway: DockerGateway,
    *,
    volume: str,
    username: str,
    servername: str,
    image: str,
    image_user: str,
    mount_path: str,
    fix_ownership: bool,
) -> bool:
    """Make the volume if it is missing; a new one is given to ``image_user``. True when the volume is new."""
    _, created = await gateway.ensure_volume(volume, labels(ROLE_HOME, username, servername))
    if created and fix_ownership and not is_root_user(image_user):
        spec = home_ownership_container(
            name=f"{volume}-init", image=image, volume=volume, mount_path=mount_path, owner=image_user
        )
        exit_code, output = await gateway.run_to_completion(spec, OWNERSHIP_FIX_TIMEOUT)
        if exit_code != 0:
            # A half-initialised volume would stay root-owned for good: remove it so the next spawn retries.
            await gateway.remove_volume(volume)
            raise DockerGatewayError(
                f"could not give new home volume {volume} to user {image_user!r} (exit {exit_code}): "
                f"{output.strip() or '(no output)'}"
            )
    return created
