"""A cheap look at a new image: how much of it would the operator clear?

:func:`quick_hint` opens the image, shrinks it to a thumbnail of at most ``size`` pixels a
side (JPEG draft mode or a box reduction: far cheaper than the operator) and returns the
fraction of thumbnail pixels that are dark and 4-connected to the border: the area that
:class:`~.operator.BorderDarkOperator` sets to 0, so the main driver of the bytes it saves.
The ``content`` policy calibrates hint -> score on the images it does process.
"""

from __future__ import annotations

from pathlib import Path


def quick_hint(path: str | Path, size: int = 64, threshold: int = 30) -> float:
    """Dark border-connected fraction (0..1) of a small thumbnail of the image at ``path``.

    Args:
        path: an image file Pillow can open.
        size: longest side of the thumbnail in pixels.
        threshold: grey value below which a pixel is dark (the operator's threshold).

    Raises:
        OSError: not a readable image (callers treat the file as hint-less).
    """
    import numpy as np
    from PIL import Image

    from .operator import border_dark_mask

    with Image.open(path) as image:
        image.draft("L", (size, size))  # JPEG decodes at a reduced scale; a no-op otherwise
        grey = image.convert("L")
        factor = max(1, max(grey.size) // size)
        if factor > 1:
            grey = grey.reduce(factor)
        arr = np.asarray(grey)
    if arr.size == 0:
        return 0.0
    return float(border_dark_mask(arr, threshold).mean())
