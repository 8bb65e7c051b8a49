"""Entry point: ``birdnerf COMMAND``. Each command lives in its own module of this package."""

from birdnerf_cli import commands  # noqa: F401  (registers every command on the app)
from birdnerf_cli.app import app, run

__all__ = ["app", "run"]
