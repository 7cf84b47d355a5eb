"""The progress display of a run on a terminal: one bar per phase with units, tasks or shards
done, and records/s (MB/s of text for a per-unit stage such as PII); silent when stderr is not a TTY.

Usage::

    progress = Progress()
    bar = progress.phase("pii", total=12)
    bar.advance(result, "scanned")        # a task's result: its counted records and text_bytes
    progress.stop()
"""

from __future__ import annotations

import sys
import time


class PhaseBar:
    """One phase's bar: counts what its finished items report."""

    def __init__(self, progress: "Progress", tid) -> None:
        self.progress, self.tid = progress, tid
        self.started = time.perf_counter()
        self.records = 0
        self.text_bytes = 0

    def advance(self, result: dict | None, count_key: str | None) -> None:
        """One item done; `result` is its step result."""
        if self.tid is None:
            return
        result = result or {}
        self.records += result.get(count_key, 0) if count_key else 0
        self.text_bytes += result.get("text_bytes", 0)
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = f"{self.records / elapsed:,.0f} records/s"
        if self.text_bytes:
            rate += f", {self.text_bytes / 1e6 / elapsed:,.2f} MB/s"
        self.progress.bar.update(self.tid, advance=1, rate=rate)


class Progress:
    """Bars on stderr when it is a terminal; a no-op otherwise."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.bar = None
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), transient=False)
            self.bar.start()

    def phase(self, name: str, total: int) -> PhaseBar:
        """A new bar for a phase of `total` items."""
        return PhaseBar(self, self.bar.add_task(name, total=total, rate="") if self.enabled else None)

    def stop(self) -> None:
        if self.enabled:
            self.bar.stop()
