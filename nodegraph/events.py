"""Executor events. Listeners get these objects; `to_json()` gives the `--json-events` form."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Event:
    kind = "event"

    def to_json(self) -> dict[str, Any]:
        data = {"event": self.kind}
        for key, value in asdict(self).items():
            data[key] = _jsonable(value)
        return data


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return repr(value)


@dataclass
class GraphStarted(Event):
    kind = "graph_started"
    run_id: int
    to_run: list[str]  # ids of the nodes that will run, in order
    cached: list[str]  # ids answered from the cache


@dataclass
class NodeStarted(Event):
    kind = "node_started"
    node_id: str
    node_type: str
    reason: str  # "new", "changed: seed", "not in cache", …


@dataclass
class NodeCached(Event):
    kind = "node_cached"
    node_id: str
    node_type: str
    ui: dict[str, Any] = field(default_factory=dict)


@dataclass
class NodeFinished(Event):
    kind = "node_finished"
    node_id: str
    node_type: str
    seconds: float
    ui: dict[str, Any] = field(default_factory=dict)


@dataclass
class Progress(Event):
    kind = "progress"
    node_id: str
    step: int
    total: int


@dataclass
class Preview(Event):
    kind = "preview"
    node_id: str
    step: int
    image: Any  # a small RGB image (PIL.Image); shown by the editor, left out of JSON

    def to_json(self) -> dict[str, Any]:
        size = getattr(self.image, "size", None)
        return {"event": self.kind, "node_id": self.node_id, "step": self.step,
                "size": list(size) if size else None}


@dataclass
class NodeError(Event):
    kind = "error"
    node_id: str | None
    node_type: str | None
    message: str
    traceback: str = ""
    input: str | None = None


@dataclass
class RunInterrupted(Event):
    """The run stopped because it was cancelled (the exception that stops it is errors.Interrupted)."""

    kind = "interrupted"
    node_id: str | None


@dataclass
class GraphFinished(Event):
    kind = "graph_finished"
    status: str  # "ok", "error", "interrupted"
    ran: int
    cached: int
    seconds: float


Listener = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def add(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def emit(self, event: Event) -> None:
        for listener in list(self._listeners):
            listener(event)
