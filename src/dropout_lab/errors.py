"""The one error type for bad configuration (docs: README "Bad input and faults")."""

from __future__ import annotations

from typing import Any

from hydra.errors import CompactHydraException


class ConfigError(ValueError, CompactHydraException):
    """A configuration value that cannot run, reported as ``key=value: fix``.

    Raised before the first training step (by :func:`dropout_lab.validate.validate`, or where the
    objects a check needs are built) and printed once by Hydra's entry point: as a
    :class:`~hydra.errors.CompactHydraException` it is shown as its message alone (no traceback,
    unless ``HYDRA_FULL_ERROR=1``), in a single run and at the end of a multirun alike. It pickles
    with its three fields, so joblib and submitit workers hand it back intact.

    Args:
        key: the dotted config key, e.g. ``"dropout.p"``.
        value: the offending value; strings are quoted (``'abc'``), None and booleans are written
            ``null``, ``true``, ``false``, as in the override the user typed.
        fix: what would be accepted (``"must be a number in [0, 1)"``) or how to fix it.

    Example:
        ``str(ConfigError("dropout.p", "abc", "must be a number in [0, 1)"))`` is
        ``dropout.p='abc': must be a number in [0, 1)``.
    """

    def __init__(self, key: str, value: Any, fix: str) -> None:
        self.key, self.value, self.fix = key, value, fix
        shown = repr(value) if isinstance(value, str) else "null" if value is None else str(value).lower() if isinstance(value, bool) else value
        super().__init__(f"{key}={shown}: {fix}")

    def __reduce__(self) -> tuple:
        return type(self), (self.key, self.value, self.fix)
