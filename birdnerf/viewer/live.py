"""Live composited renders of each browser's view, in one background thread.

While a client's camera moves, its view is rendered small (a preview, e.g. 64 px wide); once the
camera has been still for ``settle_s`` it is rendered at full width, in strips of rows so that
the picture sharpens strip by strip and a camera that moves again abandons it between two
strips. The newest camera wins: requests that arrive while a render runs replace each other,
and the next render takes the latest. Nothing here blocks the caller of :meth:`request`.

A strip is the same camera with fewer rows and its principal point moved up by the strip's
first row: every pixel's ray, and so its composited colour, is the one of the whole frame.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from birdnerf.composite.view import HIT_OPACITY, ViewRender
from birdnerf.scene.camera import Camera
from birdnerf.viewer.camera import view_camera

logger = logging.getLogger("birdnerf")

RenderFn = Callable[[Camera, np.ndarray], ViewRender]
"""Composite one view: (camera, (4, 4) OpenCV camera-to-world) -> the rendered view."""


@dataclass(frozen=True)
class ViewPose:
    """A client's camera: rotation (w, x, y, z) and position (world), vertical fov (radians),
    width / height."""

    wxyz: np.ndarray
    position: np.ndarray
    fov: float
    aspect: float


@dataclass
class Frame:
    """A picture delivered to a client.

    Attributes:
        rgb: (H, W, 3) uint8.
        depth: (H, W) z-depth along the view axis (world units), ``inf`` where no surface.
        level: ``preview``, ``partial`` (full width, some strips still from the preview) or
            ``full``.
        seconds: render time of this picture (so far, for ``partial``).
        blocks: blocks that rendered it.
    """

    client_id: int
    rgb: np.ndarray
    depth: np.ndarray
    level: str
    seconds: float
    blocks: list[str]


@dataclass
class _Client:
    pose: ViewPose | None = None
    stamp: float = 0.0
    generation: int = 0
    preview_done: int = 0
    full_done: int = 0
    preview: Frame | None = field(default=None, repr=False)


BACKGROUND = 1.0
"""Grey level shown where the blocks see nothing (white, like the viewer's own background)."""


def _images(view: ViewRender) -> tuple[np.ndarray, np.ndarray]:
    # Colours are premultiplied by opacity: what shows through is the background.
    rgb = view.rgb.numpy() + (1.0 - view.opacity.numpy()[..., None]) * BACKGROUND
    rgb = (rgb.clip(0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    depth = np.where(view.opacity.numpy() > HIT_OPACITY, view.depth.numpy(), np.inf).astype(np.float32)
    return rgb, depth


def _upscale(image: np.ndarray, height: int, width: int) -> np.ndarray:
    rows = np.arange(height) * image.shape[0] // height
    cols = np.arange(width) * image.shape[1] // width
    return image[rows][:, cols]


class LiveRenderer:
    """Renders clients' views in a background thread and hands the pictures to ``deliver``.

    Args:
        render: composites one view (see :data:`RenderFn`); replace it with :meth:`set_render`.
        deliver: receives every :class:`Frame` (called from the render thread).
        on_error: receives the message of a render that failed (the thread goes on).
        preview_width, full_width: image widths in pixels while moving and when still.
        settle_s: seconds a camera must stay still before the full-width render starts.
        strip_pixels: pixels per strip of a full-width render.
    """

    def __init__(
        self,
        render: RenderFn | None,
        deliver: Callable[[Frame], None],
        *,
        on_error: Callable[[str], None] | None = None,
        preview_width: int = 64,
        full_width: int = 480,
        settle_s: float = 0.3,
        strip_pixels: int = 1 << 14,
    ):
        self._render, self._deliver, self._on_error = render, deliver, on_error
        self.preview_width, self.full_width = preview_width, full_width
        self.settle_s, self.strip_pixels = settle_s, strip_pixels
        self.enabled = True
        self.delivered: Counter[str] = Counter()
        """Pictures delivered so far, by level."""
        self.error: str | None = None
        """The last render's error, None once a render succeeds again."""
        self._clients: dict[int, _Client] = {}
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="birdnerf-live-render", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (after the strip or preview it is rendering)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def request(self, client_id: int, pose: ViewPose) -> None:
        """A client's camera moved: render it (replaces any request not yet started)."""
        with self._cond:
            client = self._clients.setdefault(client_id, _Client())
            client.pose, client.stamp = pose, time.monotonic()
            client.generation += 1
            self._cond.notify_all()

    def forget(self, client_id: int) -> None:
        with self._cond:
            self._clients.pop(client_id, None)

    def set_render(self, render: RenderFn | None) -> None:
        """Render with ``render`` from now on (None: nothing to render) and redo every view."""
        with self._cond:
            self._render = render
            self.invalidate()

    def invalidate(self) -> None:
        """Render every client's current view again (e.g. a changed width or new blocks)."""
        with self._cond:
            for client in self._clients.values():
                client.preview_done = client.full_done = 0
            self._cond.notify_all()

    def _next(self) -> tuple[tuple[int, _Client, str] | None, float | None]:
        """The job to do now (client id, state, level), or how long to wait for one."""
        if not self.enabled or self._render is None:
            return None, None
        waiting = [(i, c) for i, c in self._clients.items() if c.pose is not None]
        moved = [(i, c) for i, c in waiting if c.preview_done < c.generation]
        if moved:
            i, c = max(moved, key=lambda ic: ic[1].stamp)
            return (i, c, "preview"), None
        now, wait = time.monotonic(), None
        for i, c in waiting:
            if c.full_done < c.generation:
                due = c.stamp + self.settle_s - now
                if due <= 0:
                    return (i, c, "full"), None
                wait = due if wait is None else min(wait, due)
        return None, wait

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                job, wait = self._next()
                if job is None:
                    self._cond.wait(timeout=wait)
                    continue
                client_id, client, level = job
                pose, generation, render = client.pose, client.generation, self._render
            try:
                if level == "preview":
                    self._preview(client_id, client, pose, generation, render)
                else:
                    self._full(client_id, client, pose, generation, render)
                self.error = None
            except Exception as err:  # a view that fails must not stop the viewer: report, go on
                self.error = f"{type(err).__name__}: {err}"
                logger.warning("live render failed: %s", self.error)
                with self._cond:
                    client.preview_done = client.full_done = generation
                if self._on_error is not None:
                    self._on_error(self.error)

    def _preview(self, client_id: int, client: _Client, pose: ViewPose, generation: int, render) -> None:
        cam, c2w = view_camera(pose.wxyz, pose.position, pose.fov, pose.aspect, self.preview_width)
        start = time.perf_counter()
        view = render(cam, c2w)
        rgb, depth = _images(view)
        frame = Frame(client_id, rgb, depth, "preview", time.perf_counter() - start, view.blocks)
        with self._cond:
            client.preview_done, client.preview = generation, frame
        # Delivered even when the camera has moved on since: the latest picture there is.
        self._send(frame)

    def _full(self, client_id: int, client: _Client, pose: ViewPose, generation: int, render) -> None:
        cam, c2w = view_camera(pose.wxyz, pose.position, pose.fov, pose.aspect, self.full_width)
        h, w = cam.height, cam.width
        base = client.preview
        rgb = _upscale(base.rgb, h, w) if base is not None else np.zeros((h, w, 3), np.uint8)
        depth = _upscale(base.depth, h, w) if base is not None else np.full((h, w), np.inf, np.float32)
        rows = max(1, self.strip_pixels // w)
        blocks: set[str] = set()
        start = time.perf_counter()
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            view = render(replace(cam, height=r1 - r0, cy=cam.cy - r0), c2w)
            rgb[r0:r1], depth[r0:r1] = _images(view)
            blocks.update(view.blocks)
            with self._cond:
                if client.generation != generation or self._stopped or not self.enabled:
                    return  # the camera moved (or the viewer stops): this picture is stale
            level = "full" if r1 == h else "partial"
            seconds = time.perf_counter() - start
            self._send(Frame(client_id, rgb.copy(), depth.copy(), level, seconds, sorted(blocks)))
        with self._cond:
            client.full_done = generation

    def _send(self, frame: Frame) -> None:
        self._deliver(frame)
        self.delivered[frame.level] += 1
