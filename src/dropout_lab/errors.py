"""The one error type for bad configuration (docs: README "Bad input and faults")."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A configuration value that cannot run, reported as ``key=value: fix``.

    Raised before the first training step (by :mod:`dropout_lab.validate` or a method's constructor)
    and caught once at the entry point, which prints the message alone (no traceback unless
    ``HYDRA_FULL_ERROR=1``).

    Args:
        key: the dotted config key, e.g. ``"dropout.p"``.
        value: the offending value (printed with ``repr`` for strings, so ``'abc'`` and ``None`` read
            unambiguously).
        fix: what would be accepted: the allowed range or values, or the fix (e.g. ``"must be in [0, 1)"``).

    Example:
        ``ConfigError("dropout.p", "abc", "must be a number in [0, 1)")`` reads
        ``dropout.p='abc': must be a number in [0, 1)``.
    """

    def __init__(self, key: str, value: Any, fix: str) -> None:
        self.key, self.value, self.fix = key, value, fix
        shown = repr(value) if isinstance(value, str) or value is None else value
        super().__init__(f"{key}={shown}: {fix}")
