"""The one error type for bad configuration (docs: docs/faults.md)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from hydra.errors import CompactHydraException

from dropout_lab.checks import BadValue


class ConfigError(BadValue, CompactHydraException):
    """A configuration value that cannot run, reported as ``key=value: fix`` (a :class:`~dropout_lab.checks.BadValue`
    that Hydra prints compactly).

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


@contextmanager
def reported() -> Iterator[None]:
    """Re-raise a :class:`~dropout_lab.checks.BadValue` from the methods package (which imports no Hydra) as
    the :class:`ConfigError` Hydra prints compactly, with the same key, value and fix."""
    try:
        yield
    except BadValue as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(err.key, err.value, err.fix) from None


class JobError(RuntimeError, CompactHydraException):
    """A job that failed on a deeper cause than the exception that reached it (a full disk under
    ``torch.save``'s ``RuntimeError``): its message is that cause (:func:`headline`), printed by Hydra as the
    console's last line; the exception it is raised from carries the whole chain."""


def chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions behind it (``__cause__``, else ``__context__`` unless suppressed), outermost first."""
    seen: list[BaseException] = []
    while err is not None and all(err is not s for s in seen):
        seen.append(err)
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    return seen


def root_cause(err: BaseException) -> BaseException:
    """The exception a user should read first: the deepest ``OSError`` behind ``err`` that names its file
    (else the deepest ``OSError``: a full disk under ``torch.save``'s ``RuntimeError: [enforce fail at
    inline_container.cc] ...``), else ``err`` itself."""
    found = [e for e in chain(err) if isinstance(e, OSError)]
    named = [e for e in found if e.filename]
    return (named or found or [err])[-1]


def headline(err: BaseException) -> str:
    """One line for :func:`root_cause`: ``No space left on device: <path>`` for an ``OSError`` (its
    ``strerror`` and file name), else ``<type>: <message>`` (the message alone for :class:`ConfigError`
    and interruptions, whose text already says what they are)."""
    root = root_cause(err)
    if isinstance(root, OSError) and root.strerror:
        return f"{root.strerror}: {root.filename}" if root.filename else f"{type(root).__name__}: {root.strerror}"
    text = str(root).strip().splitlines()[0] if str(root).strip() else ""
    return text if isinstance(root, (ConfigError, SystemExit)) else f"{type(root).__name__}: {text}".rstrip(": ")
