"""Event-loop latency: how long the GUI thread was blocked (bench/startup.py's probe and the tests)."""

from __future__ import annotations

from PySide6.QtCore import QElapsedTimer, Qt, QTimer


class LoopLatency:
    """A 10 ms timer on the GUI thread; a late tick means the event loop was blocked. Records the
    worst lateness (gap minus interval) and what the run was doing at each long gap."""

    def __init__(self, interval_ms: int = 10):
        self.interval = interval_ms
        self.clock = QElapsedTimer()
        self.max = 0.0
        self.ticks = 0
        self.stalls: list[tuple[float, float, str]] = []  # (lateness ms, at s, doing)
        self.doing = "idle"
        self.timer = QTimer()
        self.timer.setTimerType(Qt.PreciseTimer)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)

    def start(self) -> None:
        self.clock.start()
        self._last = self.clock.nsecsElapsed()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def _tick(self) -> None:
        now = self.clock.nsecsElapsed()
        late = (now - self._last) / 1e6 - self.interval
        self._last = now
        self.ticks += 1
        self.max = max(self.max, late)
        if late > 30:
            self.stalls.append((late, now / 1e9, self.doing))
