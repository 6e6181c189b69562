"""The two predicates every untrusted value passes (configs, flags, JSON files and requests): an
integer in a range, a finite number. A JSON `true` is neither: Python's bool is an int."""

from __future__ import annotations

import math


def integer_in(value, lo: int | None = None, hi: int | None = None) -> bool:
    """An int (not a bool) in [lo, hi]; an open end where a bound is None."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and (lo is None or value >= lo)
        and (hi is None or value <= hi)
    )


def finite(value) -> bool:
    """An int or float (not a bool) that is neither NaN nor infinite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
