"""Where a model load's seconds go: a clock the loader laps at each phase, and the frozen result.

`kimi ask --format json` reports the phases in its timings and `--debug` prints them, so a GPU run
shows which part of the load (finding the files, the tokenizer, CUDA start-up, building the modules,
streaming the bytes, the finishing touches) is worth working on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

#: The phases in the order a load runs them (a phase that did not happen stays 0).
PHASES = ("import", "resolve", "config", "tokenizer", "device", "build", "stream", "post")


@dataclass(frozen=True)
class LoadPhases:
    """Seconds per load phase, and the bytes the stream phase read from the weight files."""

    seconds: tuple[tuple[str, float], ...] = ()
    bytes_read: int = 0
    #: bytes `model.prefetch` read into the page cache beside the load (0: it did not run)
    prefetched: int = 0

    def as_dict(self) -> dict[str, float]:
        """`{phase: seconds}` plus `stream_gb_per_s` when bytes were streamed."""
        out = dict(self.seconds)
        stream = out.get("stream", 0.0)
        out["stream_bytes"] = float(self.bytes_read)
        out["prefetched_bytes"] = float(self.prefetched)
        if self.bytes_read and stream > 0:
            out["stream_gb_per_s"] = self.bytes_read / stream / 1e9
        return out

    def line(self) -> str:
        """One line for stderr: `resolve 0.01 s, ..., stream 2.10 s (31.2 GB at 14.9 GB/s), ...`."""
        d = self.as_dict()
        parts = []
        for name, seconds in self.seconds:
            text = f"{name} {seconds:.2f} s"
            if name == "stream" and self.bytes_read:
                text += f" ({self.bytes_read / 1e9:.2f} GB at {d.get('stream_gb_per_s', 0.0):.1f} GB/s)"
            parts.append(text)
        if self.prefetched:
            parts.append(f"{self.prefetched / 1e9:.2f} GB read ahead into the page cache")
        return ", ".join(parts)


@dataclass
class PhaseClock:
    """Laps a monotonic clock: `lap(name)` charges the time since the last lap to `name`."""

    start: float = field(default_factory=time.perf_counter)
    seconds: dict[str, float] = field(default_factory=dict)
    bytes_read: int = 0

    def __post_init__(self) -> None:
        self._last = self.start

    def lap(self, name: str) -> None:
        """Charge the seconds since the previous lap (or the start) to phase `name`."""
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now

    def total(self) -> float:
        """Seconds since the clock started."""
        return time.perf_counter() - self.start

    def frozen(self) -> LoadPhases:
        """The phases so far, in `PHASES` order (then any others)."""
        order = [p for p in PHASES if p in self.seconds] + [p for p in self.seconds if p not in PHASES]
        return LoadPhases(tuple((p, self.seconds[p]) for p in order), self.bytes_read)
