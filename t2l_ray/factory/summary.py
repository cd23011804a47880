"""What a run did: counts, the manifest files, and two labelled rates.

The wall rate is what the user waited for: adapters written over the time since the command started, the
Ray cluster's start-up, the actors' and the first batch included. The steady rate is the pipeline's pace
once running: adapters after the first batch over the time they took.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def steady_rate(arrivals: list[float], batch: int) -> float | None:
    """Adapters/s after the first batch: (n - B) / (last arrival - arrival of the first batch's last adapter).

    None unless at least two more batches follow the first: Ray Data hands rows over a block at a time, so
    one later batch would time a burst of arrivals, not generation.
    """
    times = sorted(arrivals)
    if len(times) < 3 * batch:
        return None
    span = times[-1] - times[batch - 1]
    return (len(times) - batch) / span if span > 0 else None


@dataclass
class FactorySummary:
    lines: int
    where: str = ""  # "this process" or "Ray"; empty when there was nothing to make
    batch_size: int = 1
    written: int = 0
    skipped: int = 0
    failed: int = 0
    written_bytes: int = 0
    wall_seconds: float = 0.0  # since the command started
    arrivals: list[float] = field(default_factory=list)  # seconds since the command started, per written adapter
    failures: list[dict] = field(default_factory=list)
    manifest: list[str] = field(default_factory=list)
    stopped_at: int | None = None

    @property
    def wall_rate(self) -> float:
        return self.written / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def wall_mb_per_s(self) -> float:
        return self.written_bytes / 1e6 / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def steady_rate(self) -> float | None:
        return steady_rate(self.arrivals, self.batch_size)

    def count(self, row: dict, at: float) -> None:
        setattr(self, row["status"], getattr(self, row["status"]) + 1)
        if row["status"] == "written":
            self.written_bytes += row["bytes"]
            self.arrivals.append(at)
        elif row["status"] == "failed":
            self.failures.append(row)
