"""Work around a PySide6 6.12.0 reference-count bug on Python 3.10/3.11.

PySide6 6.12.0's abi3 wheel returns None, True and False from many calls without taking a new
reference (as if they were immortal, which they are only from Python 3.12 on): every
`QWidget.setText(...)`, `QPainter.fillRect(...)`, `Signal.emit(...)` … releases one reference it
never took. After some thousands of calls the interpreter aborts ("Fatal Python error:
none_dealloc" / "bool_dealloc"), at the latest when it exits.

`install()` measures whether the running PySide6 has the bug and, only then (and only before
Python 3.12), gives those singletons a reference count so large that it can never reach zero —
what Python 3.12 does for them anyway. The real fix is a PySide6 release without the bug (6.11.x
does not have it) or Python >= 3.12.
"""

from __future__ import annotations

import ctypes
import sys

_SINGLETONS = (None, True, False, NotImplemented, Ellipsis)
_PIN = 1 << 40
_installed = False


def leaks() -> bool:
    """Does a void PySide6 call or a Signal.emit drop references to None/True?"""
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        ping = Signal()

    probe = _Probe()
    none_before, true_before = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(32):
        probe.setObjectName("probe")
        probe.ping.emit()
    return (none_before - sys.getrefcount(None) >= 16) or (true_before - sys.getrefcount(True) >= 16)


def install() -> bool:
    """Returns True when the workaround is active."""
    global _installed
    if _installed:
        return True
    if sys.version_info >= (3, 12) or not leaks():
        return False
    for obj in _SINGLETONS:
        ctypes.c_ssize_t.from_address(id(obj)).value += _PIN  # ob_refcnt is a PyObject's first field
    _installed = True
    return True
