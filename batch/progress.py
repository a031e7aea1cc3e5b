"""What a batch shows on stderr: a line per finished row with rows done / total, rate and ETA, and,
on a terminal, the current row's step bar (local backend)."""

from __future__ import annotations

import sys
import time

from nodegraph import events as ev


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class BatchProgress:
    def __init__(self, total: int, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.total = total
        self.done = 0
        self.started = time.perf_counter()
        self._bar = False
        self._row = ""

    def row_started(self, job) -> None:
        self._row = _row_name(job)

    def on_event(self, event) -> None:
        """Executor events of the row being run here: a step bar, on a terminal only."""
        if self.tty and isinstance(event, ev.Progress):
            width = 24
            filled = int(width * event.step / max(event.total, 1))
            self.stream.write(f"\r    {self._row}: [{'#' * filled}{'.' * (width - filled)}] {event.step}/{event.total}")
            self.stream.flush()
            self._bar = True

    def row_done(self, job, result: dict, outputs: list[str]) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = clock((self.total - self.done) / rate) if rate > 0 else "?"
        width = len(str(self.total))
        if result["status"] == "ok":
            what = f"ok {result['seconds']:.2f}s" + (f" → {', '.join(outputs)}" if outputs else "")
        else:
            what = f"failed: {result['error']}"
        self.line(f"[{self.done:>{width}}/{self.total}] {_row_name(job)} {what} · {rate:.2f} rows/s · ETA {eta}")

    def line(self, text: str) -> None:
        if self._bar:
            self.stream.write("\r\033[K" if self.tty else "\n")
            self._bar = False
        self.stream.write(text + "\n")
        self.stream.flush()


def _row_name(job) -> str:
    return f"row {job.row}" + (f" seed {job.seed}" if job.seed is not None else "")
