"""Reading microscope images: PNG, TIFF and JPEG to a 2-D array, and CellProfiler's scaling.

The format is found from the file's first bytes, not its name: a PNG named ``.tif`` is read as
the PNG it is, and a file that is no image we read is rejected whatever its name.

- PNG and JPEG through Pillow; 8- and 16-bit greyscale keep their dtype.
- TIFF through tifffile; 8/16/32-bit integer and float pages. A multi-page TIFF (or one with
  several series) is scored on its **first page only**; :func:`read_image` reports how many
  pages the file had, and the tiering task records it (feature ``pages``).
- Colour images (RGB/RGBA, or a TIFF page whose last axis has 3 or 4 samples) become grey as
  the mean of their colour channels (alpha dropped) after scaling to [0, 1] by their dtype,
  as CellProfiler's "grayscale" loading does: so an RGB image and the grey image of the same
  values give the same features.

Anything that cannot be read as a non-empty 2-D image raises :class:`ImageRejected`, a
:class:`~simpletasks.errors.PermanentFailure`: retrying cannot fix the file.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simpletasks.errors import PermanentFailure

logger = logging.getLogger(__name__)

_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
    b"II+\x00": "tiff",  # BigTIFF
    b"MM\x00+": "tiff",
}


class ImageRejected(PermanentFailure):
    """The object is not an image we can score (unreadable, empty, constant, too small)."""


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image: the 2-D pixels in their stored dtype (float64 in [0, 1] for colour
    images), and what the file held."""

    pixels: np.ndarray
    format: str
    pages: int = 1


def sniff_format(head: bytes) -> str | None:
    """Return ``"png"``, ``"jpeg"`` or ``"tiff"`` from a file's first bytes, or ``None``."""
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    return None


def read_image(path: Path | str) -> LoadedImage:
    """Decode the image file at ``path`` into a 2-D array (see the module docstring).

    Raises:
        ImageRejected: If the file is empty, not PNG/TIFF/JPEG, corrupt, or has no pixels
            (the message says which; the caller adds the file's name or key).
    """
    data = Path(path).read_bytes()
    name = Path(path).name
    if not data:
        raise ImageRejected("empty file (0 bytes)")
    fmt = sniff_format(data[:8])
    if fmt is None:
        raise ImageRejected(
            f"not a PNG, TIFF or JPEG file (first bytes {data[:8]!r}); the name's "
            "extension is not used to decide"
        )
    try:
        pixels, pages = _read_tiff(data) if fmt == "tiff" else (_read_pillow(data), 1)
    except Exception as exc:  # every decoder error means a corrupt file
        msg = f"corrupt {fmt.upper()} file: {type(exc).__name__}: {exc}"
        raise ImageRejected(msg) from None
    pixels = _to_grey(pixels, name)
    if pixels.size == 0:
        raise ImageRejected(f"image has no pixels (shape {pixels.shape})")
    return LoadedImage(pixels=pixels, format=fmt, pages=pages)


def _read_pillow(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        im: Image.Image = opened
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode in ("I;16B", "I;16L", "I;16N"):
            im = im.convert("I;16")
        elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        arr = np.asarray(im)
        if im.mode == "I" and arr.size and arr.min() >= 0 and arr.max() <= 65535:
            arr = arr.astype(np.uint16)  # Pillow widens 16-bit PNG to int32 in mode "I"
    return arr


def _read_tiff(data: bytes) -> tuple[np.ndarray, int]:
    import tifffile

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        pages = len(tif.pages)
        if pages == 0:
            raise ValueError("the file has no pages")
        arr = tif.pages.first.asarray()
    return arr, pages


def _to_grey(arr: np.ndarray, name: str) -> np.ndarray:
    while arr.ndim > 2 and 1 in arr.shape:  # drop singleton page/sample axes, keep 1x1
        arr = np.squeeze(arr, axis=arr.shape.index(1))
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.dtype.kind in "biuf":
        arr = to_unit_float(arr[..., :3]).mean(axis=-1)  # scaled first: the dtype goes
    if arr.ndim != 2:
        raise ImageRejected(f"expected a 2-D greyscale or RGB image, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ImageRejected(f"unsupported pixel type {arr.dtype}")
    return arr


def to_unit_float(pixels: np.ndarray) -> np.ndarray:
    """Scale pixels to float64 in [0, 1] by their dtype's range, as CellProfiler loads them.

    Unsigned integers are divided by the dtype's maximum (255, 65535...); signed integers are
    mapped from ``[min, max]`` of the dtype; bools become 0/1; floats are kept as they are.
    """
    kind = pixels.dtype.kind
    if kind == "u":
        return pixels.astype(np.float64) / float(np.iinfo(pixels.dtype).max)
    if kind == "i":
        info = np.iinfo(pixels.dtype)
        return (pixels.astype(np.float64) - info.min) / (float(info.max) - info.min)
    return pixels.astype(np.float64, copy=False)


def scorable(loaded: LoadedImage, min_side: int) -> np.ndarray:
    """The pixels of ``loaded`` in [0, 1] (:func:`to_unit_float`), if its focus can be scored.

    Raises:
        ImageRejected: If its short side is under ``min_side`` pixels, or every pixel is the
            same (no focus to measure: PLLS would be 0, which scores as sharp).
    """
    pixels = loaded.pixels
    height, width = pixels.shape
    if min(height, width) < min_side:
        raise ImageRejected(
            f"image is {width}x{height}; PLLS needs at least {min_side} pixels "
            "on the short side (CellProfiler gives 0 below 32, which would score high)"
        )
    if not pixels.max() > pixels.min():
        raise ImageRejected(
            f"constant image (every pixel {pixels.flat[0].item()!r}): it has no focus; "
            "PLLS would be 0, which the default score files in tier A"
        )
    return to_unit_float(pixels)


__all__ = [
    "ImageRejected",
    "LoadedImage",
    "read_image",
    "scorable",
    "sniff_format",
    "to_unit_float",
]
