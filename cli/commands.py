"""Registers every command module with the app (one import per command)."""

from birdnerf_cli import (  # noqa: F401
    demo,
    evaluate,
    export,
    import_data,
    info,
    ortho,
    partition,
    render,
    sample_data,
    train,
    update,
    view,
)
