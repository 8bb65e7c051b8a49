"""``python -m birdnerf_cli``: the same as the ``birdnerf`` command."""

from birdnerf_cli.main import app

app(prog_name="birdnerf")
