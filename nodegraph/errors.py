"""Exceptions the engine raises. Every message is meant to be shown to a user as it is."""

from __future__ import annotations


class GraphError(ValueError):
    """An edit to the graph model was refused (unknown node, incompatible link…)."""


class WorkflowError(ValueError):
    """A workflow file could not be read. `problems` lists every problem found, one line each."""

    def __init__(self, problems: list[str], source: str = ""):
        self.problems = list(problems) or ["unknown problem"]
        self.source = source
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            text = f"{where}{self.problems[0]}"
        else:
            text = f"{where}{len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(text)


class UserError(Exception):
    """An error whose message is written for the user and is shown as it is, without a traceback.

    Everything a user can cause and fix derives from this (bad input values, missing or unreadable
    files, refused checkpoints); the executor tells these from bugs by this type alone.
    """


class NodeInputError(UserError):
    """Raised by a node's run() for a bad input value the user can fix.

    The executor turns it into `node ID (Type): input "name": message`.
    """

    def __init__(self, input_name: str, message: str):
        self.input_name = input_name
        super().__init__(message)


class Interrupted(Exception):
    """The run was cancelled; raised at the next cancellation check (see events.RunInterrupted)."""
