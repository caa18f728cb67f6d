"""multiuser-spawner: a JupyterHub spawner giving every user their own container from one image."""

from .spawner import MultiUserSpawner, SpawnFailed
from .validation import validate_config

__version__ = "0.1.0"
__all__ = ["MultiUserSpawner", "SpawnFailed", "validate_config", "__version__"]
