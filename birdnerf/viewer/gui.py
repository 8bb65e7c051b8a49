"""The viewer's scene layers and side panel: layer switches, live-render settings and figures,
and the blocks' training status."""

from __future__ import annotations

from dataclasses import dataclass, field

from birdnerf.partition.manifest import Partition
from birdnerf.scene.scene import Scene
from birdnerf.viewer import layers
from birdnerf.viewer.live import Frame, LiveRenderer
from birdnerf.viewer.ortho import OrthoLayer
from birdnerf.viewer.status import BlockStatus, status_markdown


def _set_visible(handles: list, visible: bool) -> None:
    for handle in handles:
        handle.visible = visible


@dataclass
class ViewerGui:
    """Handles of the scene layers and of the panel's live parts."""

    server: object
    layers: dict[str, list] = field(default_factory=dict)
    block_labels: list = field(default_factory=list)
    render_figures: object = None
    blocks_table: object = None

    @classmethod
    def build(
        cls,
        server,
        viewer,
        partition: Partition,
        scene: Scene | None,
        ortho: OrthoLayer | None,
        statuses: list[BlockStatus],
        notes: dict[str, str],
    ) -> ViewerGui:
        """Draw the layers into ``server.scene`` and lay out the panel (``viewer``: refresh, live)."""
        gui, api, config = cls(server), server.scene, viewer.config
        extent = layers.site_extent(partition)
        gui.layers["blocks"] = layers.add_blocks(api, partition, statuses)
        gui.block_labels = gui.layers["blocks"][1:]
        if scene is not None:
            gui.layers["cameras"] = layers.add_cameras(api, scene, 0.025 * extent, config.thumbnails)
            if scene.points is not None and len(scene.points):
                size = 0.003 * extent
                gui.layers["points"] = layers.add_points(
                    api, scene.points, scene.point_colors, size, config.max_points
                )
            else:
                notes.setdefault("points", "the dataset has no sparse points")
        if ortho is not None:
            gui.layers["ortho"] = layers.add_ortho(api, ortho)

        panel = server.gui
        with panel.add_folder("Layers"):
            names = {
                "cameras": "Cameras",
                "blocks": "Block boxes",
                "points": "Sparse points",
                "ortho": "Orthophoto",
            }
            for key, label in names.items():
                if key in gui.layers:
                    box = panel.add_checkbox(label, True)
                    box.on_update(lambda _, key=key, box=box: _set_visible(gui.layers[key], box.value))
            live_box = panel.add_checkbox(
                "Live render", True, hint="Composite the view from the trained blocks."
            )
            for note in notes.values():
                panel.add_markdown(f"_{note}_")

        with panel.add_folder("Live render"):
            full = panel.add_slider("Width when still (px)", 64, 1280, 16, config.full_width)
            preview = panel.add_slider("Width when moving (px)", 16, 256, 8, config.preview_width)
            gui.render_figures = panel.add_markdown("_waiting for a browser's camera_")

        def set_live(_) -> None:
            viewer.live.enabled = live_box.value
            if live_box.value:
                viewer.live.invalidate()
            else:
                for client in server.get_clients().values():
                    client.scene.set_background_image(None)

        def set_widths(_) -> None:
            viewer.live.full_width, viewer.live.preview_width = int(full.value), int(preview.value)
            viewer.live.invalidate()

        live_box.on_update(set_live)
        full.on_update(set_widths)
        preview.on_update(set_widths)

        with panel.add_folder("Blocks"):
            gui.blocks_table = panel.add_markdown(status_markdown(statuses))
            refresh = panel.add_button("Refresh", hint="Read the blocks' status and figures again.")
            refresh.on_click(lambda _: viewer.refresh())
        return gui

    def show_statuses(self, statuses: list[BlockStatus], live: LiveRenderer) -> None:
        self.blocks_table.content = status_markdown(statuses)
        for label, status in zip(self.block_labels, statuses, strict=True):
            label.text = f"{status.id} ({status.status})"
        if not any(s.status == "done" for s in statuses):
            self.show_note("no trained block yet: nothing to render")

    def show_note(self, note: str) -> None:
        self.render_figures.content = f"_{note}_"

    def show_frame(self, frame: Frame, live: LiveRenderer) -> None:
        h, w = frame.rgb.shape[:2]
        rate = h * w / max(frame.seconds, 1e-9)
        counts = live.delivered.copy()
        counts[frame.level] += 1  # this one is on its way
        lines = [
            f"**{frame.level}** {w}×{h} px in {frame.seconds:.2f} s ({rate:,.0f} rays/s)",
            f"blocks: {', '.join(frame.blocks) or '–'}",
            f"delivered: {', '.join(f'{n} {k}' for k, n in sorted(counts.items()))}",
        ]
        if live.error:
            lines.append(f"last error: {live.error}")
        self.render_figures.content = "\n\n".join(lines)
