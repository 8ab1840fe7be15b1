"""HASTE_TIER: score each input image's focus and file it into a storage tier.

``prepare`` fetches the images through the datasource (its cache); ``execute`` decodes each
one, extracts its features, scores it and picks its tier; ``finalize`` places each image in
its tier (server-side copy where possible) and upserts its row in the features database.
Delivery is at least once, and both steps are idempotent: the copy goes to the same key, the
row is keyed by (source bucket, key), and if a redelivery files an image in another tier (the
configuration changed), the old copy is deleted after the row points at the new one.

With ``move: true`` in the configuration, ``finalize`` then deletes the source object, but
only once the copy is verified in its tier (the tier's service reports an object of the
source's size) and the row is committed; ``trash`` images are never deleted. A source that
cannot be deleted is a warning, not a failure. A redelivered task whose image is gone from
the source, but whose row points at a verified copy in a tier, counts that image as done.

Images that cannot be scored (unreadable, empty, constant, smaller than ``min_side``) are
rejected with :class:`~simpletasks.tasks.tiering.images.ImageRejected`, a
:class:`~simpletasks.errors.PermanentFailure` naming each image and its reason; the other
images of the same task are still placed and recorded first.

The task uses two per-worker resources (see :meth:`HasteTierTask.resources`):
``tier_db`` (a :class:`TierDB`: the features table and this worker's session) and
``tier_targets`` (the worker's open tier buckets). The configuration is the class's
``config`` (:meth:`HasteTierTask.configured` makes a subclass bound to one) or, for the plain
class run by ``simpletasks run``, the file named by ``SIMPLETASKS_TIER_CONFIG``, read when a
worker starts.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy.orm import Session

from simpletasks.buckets import open_bucket
from simpletasks.datasource import Datasource
from simpletasks.errors import ConfigError, KeyNotFound
from simpletasks.message import BasicInfo, TaskMessage
from simpletasks.task import DaemonTask, Result
from simpletasks.tasks.tiering import move
from simpletasks.tasks.tiering.config import TierConfig, load_config
from simpletasks.tasks.tiering.db import FeaturesDB, ImageRecord
from simpletasks.tasks.tiering.features import image_features, load_extractor
from simpletasks.tasks.tiering.images import ImageRejected, read_image, scorable
from simpletasks.tasks.tiering.score import checked_score, load_score
from simpletasks.tasks.tiering.tiers import BucketOpener, TierTargets

logger = logging.getLogger(__name__)

NAME = "HASTE_TIER"
CONFIG_ENV = "SIMPLETASKS_TIER_CONFIG"


@dataclass
class TierStats:
    """Seconds spent per step, summed over tasks (thread-safe); for benchmarks."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    counts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, step: str, seconds: float, n: int = 1) -> None:
        """Add ``seconds`` to ``step``."""
        with self._lock:
            self.seconds[step] += seconds
            self.counts[step] += n

    def count(self, event: str, n: int = 1) -> None:
        """Count ``event`` (``moved``, ``delete_failed``, ``already_moved``) without a time."""
        with self._lock:
            self.counts[event] += n


@contextmanager
def _timed(stats: TierStats | None, step: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        if stats is not None:
            stats.add(step, time.perf_counter() - start)


@dataclass
class TierDB:
    """The ``tier_db`` resource: the features table and one worker's session."""

    db: FeaturesDB
    session: Session


@dataclass
class Scored:
    """One image's outcome from ``execute``."""

    key: str
    path: Path
    size: int
    width: int
    height: int
    format: str
    features: dict[str, float]
    score: float
    tier: str


_config_cache: dict[str, tuple[float, TierConfig]] = {}
_config_lock = threading.Lock()


def _cached_config(path: str) -> TierConfig:
    """Load ``path`` once, and again only when its modification time changes."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        mtime = -1.0  # let load_config report the error
    with _config_lock:
        cached = _config_cache.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        config = load_config(path)
        _config_cache[path] = (mtime, config)
        return config


class HasteTierTask(DaemonTask):
    """Scores input images (PLLS by default) and files them into storage tiers."""

    name = NAME
    config: ClassVar[TierConfig | None] = None
    opener: ClassVar[BucketOpener] = staticmethod(open_bucket)  # type: ignore[assignment]
    stats: ClassVar[TierStats | None] = None

    @classmethod
    def configured(
        cls,
        config: TierConfig,
        *,
        opener: BucketOpener | None = None,
        stats: TierStats | None = None,
    ) -> type[HasteTierTask]:
        """Return a subclass (same task name) bound to ``config``.

        Args:
            config: The tiering configuration.
            opener: Opens tier bucket URLs (default ``open_bucket``; tests pass clients).
            stats: Collects per-step seconds, if given.
        """
        attrs: dict[str, Any] = {"config": config, "stats": stats}
        if opener is not None:
            attrs["opener"] = staticmethod(opener)
        return type(cls.__name__, (cls,), attrs)

    @classmethod
    def load_config(cls) -> TierConfig:
        """The class's configuration, or the file that ``SIMPLETASKS_TIER_CONFIG`` names.

        Raises:
            ConfigError: If neither is there, or the file is invalid.
        """
        if cls.config is not None:
            return cls.config
        path = os.environ.get(CONFIG_ENV)
        if not path:
            raise ConfigError(
                f"{NAME} needs a tiering configuration: set {CONFIG_ENV}=/path/tiering.yaml "
                "(or register HasteTierTask.configured(config))"
            )
        return _cached_config(path)

    @classmethod
    def resources(cls) -> dict[str, Callable[[], AbstractContextManager[Any]]]:
        """Per-worker resources: ``tier_db`` and ``tier_targets``."""
        return {"tier_db": cls._db_resource, "tier_targets": cls._targets_resource}

    @classmethod
    @contextmanager
    def _db_resource(cls) -> Iterator[TierDB]:
        config = cls.load_config()
        db = FeaturesDB(config.database, table=config.db_table, schema=config.db_schema)
        with db.session() as session:
            yield TierDB(db, session)

    @classmethod
    @contextmanager
    def _targets_resource(cls) -> Iterator[TierTargets]:
        yield TierTargets(cls.load_config(), cls.opener)

    # -- hooks -------------------------------------------------------------------------------

    def _resource(self, name: str) -> Any:
        context = getattr(self, "context", None)
        resources = getattr(context, "resources", None)
        if resources is not None:
            try:
                return resources[name]
            except KeyError:
                pass
        # No per-worker resource (run outside a daemon, or a daemon without resources):
        # open one for this task only.
        stack = self.__dict__.setdefault("_own_resources", ExitStack())
        own = self.__dict__.setdefault("_own", {})
        if name not in own:
            own[name] = stack.enter_context(self.resources()[name]())
        return own[name]

    def _close_own(self) -> None:
        stack = self.__dict__.pop("_own_resources", None)
        self.__dict__.pop("_own", None)
        if stack is not None:
            stack.close()

    def prepare(self, datasource: Datasource) -> None:
        """Fetch every input image into the cache.

        In move mode the images are read from the bucket even when cached, so that a cached
        image whose source an earlier delivery already moved is never placed again. An image
        missing from the bucket whose row points at a copy of its size in a tier was moved
        by an earlier delivery: it is done (its path is ``None``) and skipped.

        Raises:
            ConfigError: If the daemon has no bucket (the images' source).
            PermanentFailure: In move mode, if a tier overlaps the source bucket.
            KeyNotFound: If an image is missing and no tiered copy of it is recorded.
        """
        source = getattr(datasource, "bucket", None)
        if source is None:
            raise ConfigError(f"{NAME} reads its images from the daemon's bucket; give it one")
        config = self.load_config()
        if config.move:
            move.refuse_overlaps(config, source.url)
        self.paths: list[Path | None] = []
        try:
            with _timed(self.stats, "download"):
                try:
                    if self.input_keys:
                        self.paths = list(
                            datasource.get(self.input_keys, override_cache=config.move)
                        )
                except KeyNotFound:
                    self.paths = self._get_each(datasource, config.move)
        except BaseException:
            self._close_own()
            raise

    def _get_each(self, datasource: Datasource, override: bool) -> list[Path | None]:
        """Fetch the images one by one; ``None`` for each one an earlier delivery moved."""
        paths: list[Path | None] = []
        for key in self.input_keys:
            try:
                paths.append(datasource.get(key, override_cache=override))
            except KeyNotFound as exc:
                tdb: TierDB = self._resource("tier_db")
                targets: TierTargets = self._resource("tier_targets")
                source = datasource.bucket  # type: ignore[attr-defined]
                move.moved_before(tdb.db, tdb.session, targets, source, key, exc, self._count)
                paths.append(None)
        return paths

    def _count(self, event: str) -> None:
        if self.stats is not None:
            self.stats.count(event)

    def execute(self, datasource: Datasource) -> Result:
        """Decode, extract features, score and choose a tier for every image.

        Raises:
            ImageRejected: If no image of the task can be scored (reasons for each).
        """
        config = self.load_config()
        extractor = load_extractor(config.features)
        score_fn = load_score(
            config.score_function, feature=config.score_feature, k=config.k, x0=config.x0
        )
        self.scored: list[Scored] = []
        self.rejected: list[str] = []
        moved_before = 0
        for key, path in zip(self.input_keys, self.paths, strict=True):
            if path is None:  # moved by an earlier delivery (see prepare)
                moved_before += 1
                continue
            try:
                self.scored.append(self._score_one(config, extractor, score_fn, key, Path(path)))
            except ImageRejected as exc:
                self.rejected.append(f"{key}: {exc}")
        if not self.scored and self.rejected:
            self._close_own()
            raise ImageRejected("; ".join(self.rejected))
        tiers = Counter(s.tier for s in self.scored)
        summary = ", ".join(f"{t}: {n}" for t, n in sorted(tiers.items()))
        if moved_before:
            summary = ", ".join(filter(None, [summary, f"moved before: {moved_before}"]))
        return Result(success=True, outputs=[s.key for s in self.scored], message=summary)

    def _score_one(
        self, config: TierConfig, extractor: Any, score_fn: Any, key: str, path: Path
    ) -> Scored:
        with _timed(self.stats, "decode"):
            loaded = read_image(path)
            height, width = loaded.pixels.shape
            unit = scorable(loaded, config.min_side)
        with _timed(self.stats, "features"):
            features = image_features(extractor, unit, loaded.pages)
            score = checked_score(score_fn, features)
            tier = config.policy.tier_for(score)
        return Scored(
            key=key,
            path=path,
            size=path.stat().st_size,
            width=width,
            height=height,
            format=loaded.format,
            features=features,
            score=score,
            tier=tier,
        )

    def finalize(self, datasource: Datasource, result: Result) -> None:
        """Place each scored image in its tier and upsert its row; then report rejects.

        Raises:
            ImageRejected: After the good images are done, if some images were rejected.
        """
        try:
            self._finalize(datasource)
        finally:
            self._close_own()
        if self.rejected:
            raise ImageRejected(
                f"{len(self.rejected)} of {len(self.input_keys)} image(s) rejected (the others "
                "were filed): " + "; ".join(self.rejected)
            )

    def _finalize(self, datasource: Datasource) -> None:
        config = self.load_config()
        source = datasource.bucket  # type: ignore[attr-defined]
        targets: TierTargets = self._resource("tier_targets")
        tdb: TierDB = self._resource("tier_db")
        context = getattr(self, "context", None)
        host = socket.gethostname()
        for s in self.scored:
            tier = config.tier(s.tier)
            storage_url = None
            if tier is not None:
                with _timed(self.stats, "copy"):
                    storage_url, _method = targets.place(tier, source, s.key, s.path)
                    if config.move:
                        move.verify_copy(targets, tier, s.key, s.size, storage_url)
            record = ImageRecord(
                source=source.url,
                key=s.key,
                size_bytes=s.size,
                width=s.width,
                height=s.height,
                format=s.format,
                features=s.features,
                score=s.score,
                tier=s.tier,
                storage_url=storage_url,
                host=host,
                task_id=self.id,
                job_id=getattr(context, "job_id", None),
                attempt=getattr(context, "attempt", 1),
            )
            with _timed(self.stats, "database"):
                previous = tdb.db.storage_url_of(tdb.session, source.url, s.key)
                tdb.db.upsert(tdb.session, record)
            if previous and previous != storage_url:
                logger.info("%s moved: %s -> %s", s.key, previous, storage_url)
                targets.remove(previous, s.key)
            if config.move and tier is not None:  # trash stays in the source bucket
                with _timed(self.stats, "delete"):
                    move.delete_source(source, s.key, self._count)


def make_tier_job(
    keys: list[str], *, base_directory: str = "", per_task: int = 1, first_id: int = 1
) -> list[TaskMessage]:
    """Return HASTE_TIER messages for ``keys`` (relative to ``base_directory``).

    Args:
        keys: Image keys, relative to ``base_directory``.
        base_directory: Their common prefix in the source bucket.
        per_task: Images per task.
        first_id: The first task's id.
    """
    if per_task < 1:
        raise ValueError("per_task must be >= 1")
    return [
        TaskMessage(
            basic_info=BasicInfo(
                id=first_id + n,
                name=NAME,
                base_directory=base_directory,
                inputs=tuple(keys[i : i + per_task]),
            ),
            payload_info=None,
        )
        for n, i in enumerate(range(0, len(keys), per_task))
    ]


__all__ = ["NAME", "HasteTierTask", "Scored", "TierDB", "TierStats", "make_tier_job"]
