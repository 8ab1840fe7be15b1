"""Move mode of the tiering worker (``move: true``): the checks around deleting a source.

The task (:mod:`.task`) places an image in its tier and records its row as in copy mode;
these functions are what move mode adds around that:

- :func:`refuse_overlaps`: before anything runs, no tier may share objects with the source
  bucket (a copy could land on a source object and the delete remove the only copy);
- :func:`verify_copy`: after placing, the tier must hold an object of the source's size;
- :func:`delete_source`: after the row is committed, the source goes; a failure is a warning;
- :func:`moved_before`: on a redelivery whose source is gone, the row and its verified copy
  tell that an earlier delivery moved the image (done), or why it is really missing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from simpletasks.errors import IntegrityError, KeyNotFound, PermanentFailure
from simpletasks.tasks.tiering.config import Tier, TierConfig
from simpletasks.tasks.tiering.db import FeaturesDB
from simpletasks.tasks.tiering.tiers import TierTargets, overlaps

logger = logging.getLogger(__name__)

Count = Callable[[str], None]  # counts an event: moved, delete_failed, already_moved


def refuse_overlaps(config: TierConfig, source_url: str) -> None:
    """Refuse to move into a tier that shares objects with the source bucket.

    Raises:
        PermanentFailure: If a tier's URL overlaps ``source_url``.
    """
    for tier in config.tiers.values():
        if overlaps(tier.url, source_url):
            raise PermanentFailure(
                f"move: tier {tier.name} ({tier.url}) overlaps the source bucket {source_url}: "
                "a copy could land on a source object and moving would delete the only copy. "
                "Give the source and the tiers separate buckets or sibling prefixes, or set "
                "move: false"
            )


def verify_copy(targets: TierTargets, tier: Tier, key: str, size: int, storage_url: str) -> None:
    """Check that ``tier`` holds an object of ``size`` bytes under ``key``.

    Raises:
        IntegrityError: If the copy is missing or of another size (the source is kept).
    """
    stored = targets.stored_size(tier, key)
    if stored != size:
        found = "is missing" if stored is None else f"has {stored} bytes"
        raise IntegrityError(
            f"move: the copy of {key} at {storage_url} {found}; the source has {size} "
            "bytes and is kept"
        )


def delete_source(source: Any, key: str, count: Count) -> None:
    """Delete the moved image's source; a failure is a warning (the copy and row are in
    place, the source simply stays)."""
    try:
        source.delete(key)
    except Exception as exc:
        logger.warning(
            "move: could not delete %s from %s (its copy and row are in place; the source "
            "stays): %s: %s",
            key,
            source.url,
            type(exc).__name__,
            exc,
        )
        count("delete_failed")
    else:
        count("moved")


def moved_before(
    db: FeaturesDB,
    session: Session,
    targets: TierTargets,
    source: Any,
    key: str,
    missing: KeyNotFound,
    count: Count,
) -> None:
    """Return if ``key``'s row points at a copy of the recorded size in a tier (an earlier
    delivery moved it); otherwise raise ``missing`` with the reason added.

    Raises:
        KeyNotFound: If no row, a row without a copy (trash), or a missing or wrong copy.
    """
    row = db.row(session, source.url, key)
    if row is None:
        why = "no row in the features database records a tiered copy"
    elif row["storage_url"] is None:
        why = f"its row files it in {row['tier']!r}, which keeps no copy"
    else:
        url = row["storage_url"]
        tier = targets.tier_of(url, key)
        size = None if tier is None else targets.stored_size(tier, key)
        if size is not None and size == row["size_bytes"]:
            logger.info("%s is gone from %s but filed at %s: done before", key, source.url, url)
            count("already_moved")
            return
        if tier is None:
            why = f"its row's copy {url} is in no configured tier"
        elif size is None:
            why = f"its row's copy {url} is missing too"
        else:
            why = f"its row's copy {url} has {size} bytes, the row says {row['size_bytes']}"
    raise KeyNotFound(f"{missing}; {why}") from None
