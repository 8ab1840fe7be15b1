"""End game: do not start a pre-processing job the uplink would have to wait for.

Near the end of a run the uplink drains what waits; a CPU job that outlasts that backlog makes
the link idle, second for second, to save ``score x cpu_seconds`` bytes (a fraction of a second
on the link). :func:`worth_starting` weighs the two. It needs the link's throughput in bytes per
CPU-second of wall time, which :class:`LaneRates` infers from what the lanes report, without a
clock: bytes confirmed uploaded over the wall time the CPU lane has covered (CPU-seconds done /
the most jobs seen running at once). A caller that knows the link's bandwidth and the number of
CPU workers (a real agent can measure both) may pass them instead.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LaneRates:
    """What the lanes reported so far, and the link throughput it implies.

    Args:
        bandwidth: bytes/s of the link, if known (None: inferred).
        cores: CPU workers, if known (None: the most jobs seen running at once).
    """

    bandwidth: float | None = None
    cores: int | None = None
    uploaded_bytes: int = 0
    cpu_seconds: float = 0.0
    cpu_bytes: int = 0  # original size of the files pre-processed (for CPU-seconds per byte)
    most_running: int = 0

    def started(self, running: int) -> None:
        """A job started; ``running`` jobs (this one included) are now in progress."""
        self.most_running = max(self.most_running, running)

    def finished(self, size_before: int, cpu_seconds: float) -> None:
        """A job finished: it took ``cpu_seconds`` on a file of ``size_before`` bytes."""
        self.cpu_seconds += cpu_seconds
        self.cpu_bytes += size_before

    def sent(self, nbytes: int) -> None:
        """An upload of ``nbytes`` was confirmed."""
        self.uploaded_bytes += nbytes

    def link_rate(self) -> float | None:
        """Link bytes per second of wall time (None until both lanes have finished something)."""
        if self.bandwidth is not None:
            return self.bandwidth
        cores = self.cores or max(self.most_running, 1)
        wall = self.cpu_seconds / cores
        if wall <= 0 or self.uploaded_bytes <= 0:
            return None
        return self.uploaded_bytes / wall

    def cpu_per_byte(self) -> float | None:
        """Mean CPU-seconds per original byte of the files pre-processed so far."""
        if self.cpu_bytes <= 0:
            return None
        return self.cpu_seconds / self.cpu_bytes


def worth_starting(
    *, size: int, score: float, backlog_bytes: float, link_busy: bool, rates: LaneRates
) -> bool:
    """Whether pre-processing a file of ``size`` bytes with estimated ``score`` pays off.

    Args:
        size: the file's original size (bytes).
        score: its estimated saving, bytes per CPU-second.
        backlog_bytes: what the link still has to send without this file (waiting files and
            what is left of uploads in flight).
        link_busy: whether an upload is in flight.
        rates: the lanes' history (throughput, CPU cost per byte).

    Returns:
        True if the link would not run dry during the job, or if the bytes saved are worth more
        link time than the link would wait. While the rates are unknown (the first seconds):
        True unless the link would certainly idle (nothing in flight, nothing else waiting), so
        the very first file goes up raw instead of leaving the link idle until the next arrival.
    """
    link = rates.link_rate()
    per_byte = rates.cpu_per_byte()
    if link is None or per_byte is None:
        return link_busy or backlog_bytes > 0
    cpu = per_byte * size
    wait = cpu - backlog_bytes / link
    if wait <= 0:
        return True
    return max(score, 0.0) * cpu / link > wait
