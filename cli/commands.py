"""Registers every command module with the app (one import per command)."""

from birdnerf_cli import partition  # noqa: F401
