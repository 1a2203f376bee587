"""The range checker for config fields: one line naming the field at fault.

    check_fields(config, [("num_frames", INT, 1, None, False)])   # ValueError unless an int >= 1

Used by the data configs and by `vatt_gh.provision`'s synthetic-data settings.
"""

import math
import numbers
from typing import Optional, Sequence, Tuple

INT, REAL = "an integer", "a number"


def check_fields(
    config, rules: Sequence[Tuple[str, str, float, Optional[float], bool]], name: str = ""
) -> None:
    """Raises ValueError naming the first field of `config` outside its range.

    config: an object (its attributes) or a dict; `name` (default: the class name) prefixes
    the field in the message. rules: (field, INT or REAL, low, high or None, low exclusive).
    NaN, inf and bools are rejected as numbers.
    """
    name = name or type(config).__name__
    for field, kind, low, high, exclusive in rules:
        value = config[field] if isinstance(config, dict) else getattr(config, field)
        numeric = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if kind == INT:
            numeric = numeric and isinstance(value, numbers.Integral)
        ok = numeric and math.isfinite(value)
        ok = ok and (value > low if exclusive else value >= low) and (high is None or value <= high)
        if not ok:
            bound = f"{'>' if exclusive else '>='} {low:g}" + (
                f" and <= {high:g}" if high is not None else ""
            )
            raise ValueError(f"{name}.{field} = {value!r}: must be {kind} {bound}")
