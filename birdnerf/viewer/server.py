"""``serve``: the web viewer of a run (viser), and the :class:`Viewer` handle it returns.

The viewer only reads the run: cameras and sparse points from its dataset, block boxes and
statuses from ``partition.json`` and the block folders, the orthophoto from ``RUN/ortho`` when
present, and live composited renders of each browser's camera from the trained blocks.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from birdnerf.composite.blend import BlendIndex
from birdnerf.composite.cache import BlockCache
from birdnerf.composite.view import render_view
from birdnerf.device import resolve_device
from birdnerf.errors import BirdnerfError
from birdnerf.field.backends import BACKENDS
from birdnerf.partition import load_scene, read_partition
from birdnerf.partition.manifest import Partition
from birdnerf.viewer import layers
from birdnerf.viewer.gui import ViewerGui
from birdnerf.viewer.live import Frame, LiveRenderer, RenderFn, ViewPose
from birdnerf.viewer.ortho import ORTHOPHOTO, read_ortho_layer
from birdnerf.viewer.status import DONE, block_statuses

DEPTH_LIMIT = (2**24 - 1) / 100_000
"""The farthest depth viser's background image can carry (world units): 167.77."""


@dataclass
class ViewerConfig:
    """How to serve the viewer."""

    host: str = "127.0.0.1"
    """Address to listen on (loopback by default: the viewer is not exposed to the network)."""
    port: int = 8080
    """Port to listen on; the next free one is taken when it is busy, 0 for any free port."""
    full_width: int = 480
    """Width in pixels of the live render once the camera is still."""
    preview_width: int = 64
    """Width in pixels of the live render while the camera moves."""
    settle_s: float = 0.3
    """Seconds the camera must be still before the full-width render starts."""
    thumbnails: int = 64
    """Width in pixels of the photo thumbnails on the camera frustums (0: none)."""
    max_points: int = 200_000
    """At most this many sparse points are sent to the browser (every k-th point)."""
    device: str = "auto"
    """Torch device of the block models (``auto``: CUDA when available)."""
    backend: str = "auto"
    """Field backend of the block models (``auto``: the fastest here; on a CPU the first render
    then compiles the field, up to a minute; ``torch``: no compilation, slower renders)."""
    cache_size: int = 8
    """Block models kept in memory."""


class Viewer:
    """A running viewer: its ``url``, the live renderer's counts, ``refresh`` and ``stop``."""

    def __init__(self, run_dir: Path, partition: Partition, config: ViewerConfig):
        import viser

        self.run_dir, self.partition, self.config = run_dir, partition, config
        device = resolve_device(config.device)
        self._cache = BlockCache(run_dir, config.cache_size, device, config.backend)
        self._stopped = threading.Event()
        with _quiet():  # viser prints its own banner; the caller says where the viewer is
            self.server = viser.ViserServer(
                host=config.host, port=config.port, label="birdnerf", verbose=False
            )
        self.live = LiveRenderer(
            None,
            self._deliver,
            on_error=self._render_failed,
            preview_width=config.preview_width,
            full_width=config.full_width,
            settle_s=config.settle_s,
        )
        self.gui: ViewerGui | None = None
        self.last_frame: Frame | None = None
        """The last picture delivered to a browser."""

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.server.get_port()}"

    @property
    def delivered(self) -> Counter[str]:
        """Live renders delivered to browsers so far, by level (``preview``, ``partial``, ``full``)."""
        return self.live.delivered

    def refresh(self) -> None:
        """Read the blocks' statuses again; blocks trained since are rendered from now on.

        The manifest itself is read once: after ``birdnerf update``, start the viewer again."""
        statuses = block_statuses(self.run_dir, self.partition)
        done = {s.id for s in statuses if s.status == DONE}
        self.live.set_render(self._render_fn([b for b in self.partition.blocks if b.id in done]))
        if self.gui is not None:
            self.gui.show_statuses(statuses, self.live)

    def _render_fn(self, blocks) -> RenderFn | None:
        if not blocks:
            return None
        # Only trained blocks render; the blend weights give the others' share to their neighbours.
        trained = replace(self.partition, blocks=blocks)
        index, cache = BlendIndex(trained), self._cache
        return lambda cam, c2w: render_view(trained, cache, cam, c2w, index=index)

    def _deliver(self, frame: Frame) -> None:
        client = self.server.get_clients().get(frame.client_id)
        if client is None:
            return
        hits = frame.depth[np.isfinite(frame.depth)]
        # Depth lets the overlays hide behind rendered surfaces, where viser can carry it.
        depth = None
        if hits.size and hits.max() < DEPTH_LIMIT:
            depth = np.where(np.isfinite(frame.depth), frame.depth, DEPTH_LIMIT)
        client.scene.set_background_image(frame.rgb, format="jpeg", jpeg_quality=90, depth=depth)
        self.last_frame = frame
        if self.gui is not None:
            self.gui.show_frame(frame, self.live)

    def _render_failed(self, message: str) -> None:
        if self.gui is not None:
            self.gui.show_note(f"render failed: {message}")

    def _on_connect(self, client) -> None:
        client.camera.far = max(1000.0, 20.0 * layers.site_extent(self.partition))

        def moved(camera) -> None:
            self.live.request(
                client.client_id, ViewPose(camera.wxyz, camera.position, camera.fov, camera.aspect)
            )

        client.camera.on_update(moved)
        if self.gui is not None and not self.live.delivered:
            self.gui.show_note("rendering the first view (on a CPU, the first render compiles the field)")
        moved(client.camera)

    def stop(self) -> None:
        """Stop rendering and serving (idempotent)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.live.stop()
        with _quiet():
            self.server.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` (True) or ``timeout`` seconds pass (False)."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> Viewer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _initial_view(server, partition: Partition) -> None:
    boxes = np.array([b.expanded for b in partition.blocks], dtype=np.float64)
    centre = np.array([*(0.5 * (boxes[:, :2].min(0) + boxes[:, 2:].max(0))), partition.frame["ground_z"]])
    extent = layers.site_extent(partition)
    server.scene.set_up_direction("+z")
    server.initial_camera.look_at = centre
    server.initial_camera.position = centre + np.array([0.0, -0.4, 0.55]) * extent
    server.initial_camera.up = (0.0, 0.0, 1.0)


def serve(run: str | Path, config: ViewerConfig | None = None, *, block: bool = False) -> Viewer:
    """Serve the web viewer of ``run``; returns at once (``block``: after :meth:`Viewer.stop`).

    Raises:
        BirdnerfError: no readable ``partition.json``, an unknown backend or unusable device, or
            viser missing.
    """
    config = config or ViewerConfig()
    if config.backend not in ("auto", *BACKENDS):
        raise BirdnerfError(f"unknown field backend {config.backend!r} (auto, {', '.join(BACKENDS)})")
    run_dir = Path(run)
    partition = read_partition(run_dir)
    try:
        import viser  # noqa: F401
    except ImportError:
        raise BirdnerfError("the viewer needs viser: pip install 'birdnerf[viewer]'") from None
    notes = {}
    try:
        scene = load_scene(partition)
    except BirdnerfError as err:  # boxes and renders need no photos: show the rest
        scene, notes["cameras"] = None, f"cameras and points not shown: {err}"
    try:
        ortho = read_ortho_layer(
            run_dir / ORTHOPHOTO,
            float(partition.frame["ground_z"]),
            scene.geo if scene is not None else None,
            np.asarray(partition.frame["load_transform"], dtype=np.float64),
        )
    except BirdnerfError as err:
        ortho = None
        notes["ortho"] = (
            "no orthophoto yet (`birdnerf ortho` writes one)"
            if not (run_dir / ORTHOPHOTO).exists()
            else f"orthophoto not shown: {err}"
        )
    viewer = Viewer(run_dir, partition, config)
    try:
        _initial_view(viewer.server, partition)
        statuses = block_statuses(run_dir, partition)
        viewer.gui = ViewerGui.build(viewer.server, viewer, partition, scene, ortho, statuses, notes)
        viewer.live.start()
        viewer.refresh()
        viewer.server.on_client_connect(viewer._on_connect)
        viewer.server.on_client_disconnect(lambda client: viewer.live.forget(client.client_id))
    except BaseException:
        viewer.stop()
        raise
    if block:
        try:
            viewer.wait()
        finally:
            viewer.stop()
    return viewer
