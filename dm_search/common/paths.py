"""Path checks that create nothing and import nothing heavy (light commands use them)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["creatable", "file_in_the_way", "folder_problem"]


def file_in_the_way(folder: str | Path) -> Path | None:
    """The existing file (``folder`` itself or one of its parents) that stops ``folder`` from
    ever being a folder; None when there is none. Creates nothing.

    Only this is checked before a run, not permissions: a cluster's workers may be allowed to
    write where the machine that checks is not.
    """
    path = Path(folder).expanduser()
    for p in (path, *path.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


def creatable(path: Path) -> OSError | None:
    """Why ``path`` could not be created here (None if it could), without creating anything:
    unlike a trial's folders, the driver itself writes these."""
    blocked = file_in_the_way(path.parent)
    if blocked is not None:
        return NotADirectoryError(f"{blocked} is a file")
    parent = next(p for p in (path.parent, *path.parent.parents) if p.exists())
    if not os.access(parent, os.W_OK | os.X_OK):
        return PermissionError(f"{parent} is not writable")
    return None


def folder_problem(folder: Path) -> OSError | None:
    """Why this process could not write into ``folder`` (None if it could), creating
    nothing: a file in its place, a read-only folder, or a parent it cannot create in."""
    if folder.is_file():
        return NotADirectoryError(f"{folder} is a file")
    if folder.is_dir():
        writable = os.access(folder, os.W_OK | os.X_OK)  # a read-only mount says no too
        return None if writable else PermissionError(f"{folder} is not writable")
    return creatable(folder)
