"""The options of a config group, as Hydra offers them (so tests and scripts never list models or datasets by hand)."""

from __future__ import annotations

from pathlib import Path

#: the repository's config folder (train.py's ``config_path``)
CONF = Path(__file__).resolve().parents[2] / "conf"


def options(group: str) -> list[str]:
    """Sorted option names of ``conf/<group>/*.yaml`` (``model`` -> ``['alexnet', 'lenet5', ...]``); for ``dropout``
    also every method's key (its node is registered from its spec, :mod:`dropout_lab.dropout.spec`; the YAMLs there
    are presets). Shared bases that options include through their defaults list live in ``conf/base/<group>/``,
    where Hydra does not offer them as choices."""
    names = {p.stem for p in (CONF / group).glob("*.yaml")}
    if group == "dropout":
        from dropout_lab.dropout import spec

        names |= set(spec.specs())
    return sorted(names)
