"""What a config value accepts, as small composable checks (``number(0, 1)``, ``choice("fc", "conv")``, ``a | b``).

Used by :data:`dropout_lab.validate.RANGES` (the harness's keys) and by each method's
:class:`~dropout_lab.dropout.spec.MethodSpec` (its arguments), so that one phrase (``"an integer >= 1"``)
names what a key accepts in every error message.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class BadValue(ValueError):
    """A value a key does not accept, reported as ``key=value: fix`` (the methods' own error: it imports no Hydra;
    the harness re-raises it as :class:`dropout_lab.errors.ConfigError`).

    Args:
        key: the dotted config key, e.g. ``"dropout.p"``.
        value: the offending value; strings are quoted (``'abc'``), None and booleans are written
            ``null``, ``true``, ``false``, as in the override the user typed.
        fix: what would be accepted (``"must be a number in [0, 1)"``) or how to fix it.
    """

    def __init__(self, key: str, value: Any, fix: str) -> None:
        self.key, self.value, self.fix = key, value, fix
        shown = (
            repr(value)
            if isinstance(value, str)
            else "null"
            if value is None
            else str(value).lower()
            if isinstance(value, bool)
            else value
        )
        super().__init__(f"{key}={shown}: {fix}")

    def __reduce__(self) -> tuple:
        return type(self), (self.key, self.value, self.fix)


@dataclass(frozen=True)
class Check:
    """What one key accepts: ``ok(value)`` and the phrase ``wants`` for the error message
    (``"an integer >= 1"``). ``a | b`` accepts what either accepts."""

    ok: Callable[[Any], bool]
    wants: str

    def __or__(self, other: Check) -> Check:
        return Check(lambda v: self.ok(v) or other.ok(v), f"{self.wants} or {other.wants}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def number(
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
) -> Check:
    """A finite number (an ``int`` if ``integer``; no bools) between ``low`` and ``high``, ends
    included unless ``low_open``/``high_open``."""

    def ok(v: Any) -> bool:
        if not _is_number(v) or (integer and not isinstance(v, int)):
            return False
        return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)

    what = "an integer" if integer else "a number"
    if math.isinf(high):
        bound = f" {'>' if low_open else '>='} {low}" if not math.isinf(low) else ""
    else:
        bound = f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    return Check(ok, what + bound)


def integer(low: int, high: float = math.inf) -> Check:
    """An ``int`` in [low, high]."""
    return number(low, high, integer=True)


def choice(*values: str) -> Check:
    """One of the strings ``values``."""
    return Check(lambda v: v in values, f"one of {', '.join(values)}")


def exactly(value: Any, meaning: str) -> Check:
    """The one value ``value`` (of its type: ``-1`` is not ``-1.0`` or ``True``), which means ``meaning``;
    ``None`` is written ``null``."""
    return Check(lambda v: type(v) is type(value) and v == value, f"{'null' if value is None else value} ({meaning})")


BOOL = Check(lambda v: isinstance(v, bool), "true or false")
RATE = number(0, 1, high_open=True)  # a probability that must leave something: [0, 1)
FRACTION = number(0, 1)  # [0, 1]
POSITIVE = number(0, low_open=True)  # > 0
NONNEGATIVE = number(0)  # >= 0
COUNT = integer(1)  # a whole number >= 1
SIZE = exactly(None, "the files' size, or the model's native size") | COUNT
BATCHES = number(0, 1, low_open=True) | COUNT  # Lightning's limit_*_batches: a fraction of the epoch or a count
EVERY_BATCH = exactly(None, "every batch")
ODD = Check(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1 and v % 2 == 1, "an odd integer >= 1")
