"""The PySide6 editor. Talks to the engine through the graph model and executor events."""

from . import qtfix

qtfix.install()
