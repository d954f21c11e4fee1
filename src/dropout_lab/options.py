"""The options of a config group, read from ``conf/`` (so tests and scripts never list models or datasets by hand)."""

from __future__ import annotations

from pathlib import Path

#: the repository's config folder (train.py's ``config_path``)
CONF = Path(__file__).resolve().parents[2] / "conf"


def options(group: str) -> list[str]:
    """Sorted option names of ``conf/<group>/*.yaml`` (``model`` -> ``['alexnet', 'lenet5', ...]``). Shared bases
    that options include through their defaults list live in ``conf/base/<group>/``, where Hydra does not offer
    them as choices."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))
