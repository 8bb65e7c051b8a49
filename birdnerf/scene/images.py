"""Loading photos as RGB arrays, with one clear error per unreadable file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from birdnerf.errors import BirdnerfError
from birdnerf.scene.camera import Camera


def load_rgb(path: str | Path, cam: Camera | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of the photo at ``path``; checks its size against ``cam`` if given."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            rgb = _to_rgb8(im)
    except FileNotFoundError:
        raise BirdnerfError("image not found", path) from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise BirdnerfError(f"unreadable image ({err})", path) from None
    if cam is not None and (rgb.shape[1], rgb.shape[0]) != (cam.width, cam.height):
        raise BirdnerfError(
            f"image is {rgb.shape[1]}x{rgb.shape[0]} but its camera says {cam.width}x{cam.height}", path
        )
    return rgb


def photo_problem(path: Path, cam: Camera | None = None, decode: bool = False) -> str | None:
    """Why the photo at ``path`` cannot be used (from its header: missing, empty, not an image,
    or, given its camera ``cam``, not the camera's size; with ``decode``, also data that cannot be
    decoded, e.g. a truncated file), or None when it looks usable."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with Image.open(path) as im:
            size = im.size
            if decode:
                # A JPEG decoded at 1/8 scale still reads every byte of it, so truncation shows.
                im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
                try:
                    im.load()
                except (OSError, ValueError, SyntaxError) as err:
                    return f"corrupt or truncated image data ({err})"
    except FileNotFoundError:
        return "not found"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        return f"not a readable image ({type(err).__name__})"
    if cam is not None and size != (cam.width, cam.height):
        return f"is {size[0]}x{size[1]}, its camera says {cam.width}x{cam.height}"
    return None


def unusable_photos(bad: list[tuple[str, str]], total: int, source: Path, hint: str = "") -> BirdnerfError:
    """The one-line error listing the first of the ``bad`` photos (name, reason) of ``total``."""
    listed = "; ".join(f"{name}: {why}" for name, why in bad[:5])
    more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
    tail = f"; {hint}" if hint else ""
    return BirdnerfError(f"{len(bad)} of {total} photos are unusable: {listed}{more}{tail}", source)


def check_photos(paths: list[Path], cameras: list[Camera], names: list[str], source: Path) -> None:
    """Read every photo's header (fast: no pixels are decoded) and refuse the dataset, listing the
    first bad photos, when any is missing, empty, not an image or not its camera's size."""
    bad = [(n, why) for p, c, n in zip(paths, cameras, names, strict=True) if (why := photo_problem(p, c))]
    if bad:
        raise unusable_photos(bad, len(names), source)


def _to_rgb8(im: Image.Image) -> np.ndarray:
    """8-bit RGB of any photo. 16-bit grey (``I;16``, or ``I`` holding values above 255) is scaled
    from its full 16-bit range; Pillow's own conversion would clip it to white."""
    if im.mode.startswith("I;16") or (im.mode == "I" and im.getextrema()[1] > 255):
        grey = np.asarray(im, dtype=np.float64) / 257.0
        return np.repeat(np.clip(grey + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    return np.array(im.convert("RGB"))


def save_rgb(path: str | Path, rgb: np.ndarray) -> None:
    """Save an (H, W, 3) float [0, 1] or uint8 array as PNG, atomically."""
    from birdnerf.atomic import atomic_path

    if rgb.dtype != np.uint8:
        rgb = (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")
