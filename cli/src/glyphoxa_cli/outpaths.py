"""Where a command will write, checked before it connects or plays anything: a scene that
played for minutes should not end in "File exists", and a bad path is not a broker problem."""

from __future__ import annotations

import os
from pathlib import Path


class OutPathError(ValueError):
    pass


def out_dir(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as a directory to write into, made if missing."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutPathError(f"{flag} {p}: cannot make the directory: "
                           f"{exc.strerror or exc}") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise OutPathError(f"{flag} {p}: the directory is not writable")
    return p


def out_file(path: str | Path, flag: str) -> Path:
    """``path`` as a file to write (its directory made if missing)."""
    p = Path(path)
    if p.is_dir():
        raise OutPathError(f"{flag} {p}: is a directory; give a file name")
    out_dir(p.parent, flag=f"{flag} {p}: its directory")
    if p.exists() and not os.access(p, os.W_OK):
        raise OutPathError(f"{flag} {p}: the file is not writable")
    return p
