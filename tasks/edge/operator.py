"""Pre-processing operators: shrink an image file before it goes over the slow link.

The default, :class:`BorderDarkOperator`, is HASTE's miniTEM operator: the image becomes
greyscale, every pixel darker than ``threshold`` that is 4-connected (through such pixels) to
the image border becomes 0, and the result is saved as a PNG. Flat black compresses far better
than the noisy dark grid it replaces, so images with much occluded border area shrink most.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np


class Operator(Protocol):
    """Turns the file ``src`` into a (hopefully smaller) file ``dst``."""

    def apply(self, src: Path, dst: Path) -> None:
        """Read ``src``, write the processed file to ``dst``; raise on unreadable input."""
        ...


def border_dark_mask(grey: np.ndarray, threshold: int = 30) -> np.ndarray:
    """Pixels below ``threshold`` that are 4-connected to the border through such pixels.

    Args:
        grey: 2-D array of grey values.
        threshold: pixels with value ``< threshold`` count as dark.

    Returns:
        A boolean array of the same shape, True where the operator sets the pixel to 0.
    """
    import numpy as np
    from scipy import ndimage

    if grey.ndim != 2:
        raise ValueError(f"expected a 2-D greyscale array, got shape {grey.shape}")
    dark = grey < threshold
    if not dark.any():
        return np.zeros_like(dark)
    # The default structuring element of ndimage.label in 2-D is the cross: 4-connectivity.
    labels, _ = ndimage.label(dark)
    border = np.concatenate([labels[0, :], labels[-1, :], labels[:, 0], labels[:, -1]])
    touching = np.unique(border[border > 0])
    return np.isin(labels, touching)


def clear_border_dark(grey: np.ndarray, threshold: int = 30) -> np.ndarray:
    """A copy of ``grey`` with the border-connected dark pixels set to 0."""
    out = grey.copy()
    out[border_dark_mask(grey, threshold)] = 0
    return out


class BorderDarkOperator:
    """Greyscale; dark pixels 4-connected to the border become 0; save as PNG.

    Args:
        threshold: pixels with value ``< threshold`` are dark (HASTE used 30).
        compress_level: PNG zlib level (HASTE's benchmarks used 7).
    """

    name = "border-dark"

    def __init__(self, threshold: int = 30, compress_level: int = 7) -> None:
        if not 0 <= compress_level <= 9:
            raise ValueError(f"compress_level must be 0..9, got {compress_level}")
        self.threshold = threshold
        self.compress_level = compress_level

    def apply(self, src: Path, dst: Path) -> None:
        """Process ``src`` into the greyscale PNG ``dst`` (PIL errors propagate)."""
        import numpy as np
        from PIL import Image

        with Image.open(src) as image:
            grey = np.asarray(image.convert("L"))
        out = clear_border_dark(grey, self.threshold)
        Image.fromarray(out, mode="L").save(dst, format="PNG", compress_level=self.compress_level)


class CopyOperator:
    """Copies the file unchanged: a baseline that never saves a byte."""

    name = "copy"

    def apply(self, src: Path, dst: Path) -> None:
        """Copy ``src`` to ``dst``."""
        import shutil

        shutil.copyfile(src, dst)


OPERATORS: dict[str, type] = {
    BorderDarkOperator.name: BorderDarkOperator,
    CopyOperator.name: CopyOperator,
}


def get_operator(name: str = "border-dark", **options: object) -> Operator:
    """An operator by name (``border-dark`` is the default; ``copy`` never shrinks).

    Args:
        name: a key of :data:`OPERATORS`, or ``"module:Class"`` for one of your own.
        **options: passed to the operator's constructor.

    Raises:
        ValueError: unknown name.
    """
    if ":" in name:
        import importlib

        module_name, _, class_name = name.partition(":")
        return getattr(importlib.import_module(module_name), class_name)(**options)
    try:
        cls = OPERATORS[name]
    except KeyError:
        raise ValueError(f"unknown operator {name!r}; known: {sorted(OPERATORS)}") from None
    return cls(**options)
