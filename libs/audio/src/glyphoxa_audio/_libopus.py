"""Finding libopus for opuslib.

opuslib is only the ctypes binding and looks libopus up with ``ctypes.util.find_library``.
A machine with a system libopus uses it; a fresh machine without one uses the libopus
shipped inside the ``opuslib-next-bundled`` wheel, so ``./task`` needs no system packages
(docs/dependencies.md). discord.py's ``opus.load_opus`` takes the same path.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import warnings
from functools import cache
from pathlib import Path


@cache
def libopus_path() -> str:
    system = ctypes.util.find_library("opus")
    if system:
        return system
    spec = importlib.util.find_spec("opuslib_next")
    if spec and spec.origin:
        bundled = Path(spec.origin).parent / "_native" / "libopus.so"
        if bundled.exists():
            return str(bundled)
    raise RuntimeError("libopus not found: install libopus0 or the opuslib-next-bundled wheel")


def import_opuslib():  # type: ignore[no-untyped-def]
    """Import opuslib with ``find_library('opus')`` resolving to :func:`libopus_path`."""
    path = libopus_path()
    original = ctypes.util.find_library
    ctypes.util.find_library = lambda name: path if name == "opus" else original(name)  # type: ignore[assignment]
    try:
        with warnings.catch_warnings():  # opuslib 3.0.1 has `is not 0` comparisons
            warnings.simplefilter("ignore", SyntaxWarning)
            import opuslib
    finally:
        ctypes.util.find_library = original
    return opuslib
