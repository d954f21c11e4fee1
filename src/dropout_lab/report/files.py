"""File names inside a sweep folder from run values (a report never writes outside the sweep)."""

from __future__ import annotations

import re
from pathlib import Path


def safe_name(*parts: object) -> str:
    """A file name from run values: each run of characters other than letters, digits and ``-``
    becomes one ``_``, none at the ends (``../../x`` -> ``x``; no dot, so no ``..``)."""
    return re.sub(r"[^A-Za-z0-9-]+", "_", "_".join(str(p) for p in parts)).strip("_") or "_"


def inside(sweep: Path, name: str) -> Path:
    """``sweep/name`` for a :func:`safe_name` ``name``.

    Raises:
        ValueError: if the path would leave ``sweep``.
    """
    path = (sweep / name).resolve()
    if path.parent != sweep.resolve():
        raise ValueError(f"refusing to write {path}: outside the sweep folder {sweep}")
    return path
