"""Types of the data that crosses a file boundary: JSON documents and HDF5 attributes.

Functions that build such data return these types rather than ``dict[str, Any]``: mypy
then checks that every value is one the file can hold, and a reader has to narrow a value
before it uses it as a number or a string.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TypeAlias

import numpy as np

#: A JSON value (``json.dumps`` writes it, ``json.loads`` gives it back as lists/dicts).
JSONValue: TypeAlias = (
    "str | int | float | bool | Sequence[JSONValue] | Mapping[str, JSONValue] | None"
)

#: A JSON object under construction, or read back from a file.
JSONObject: TypeAlias = "dict[str, JSONValue]"

#: A value h5py stores as an attribute, or gives back when one is read.
AttrValue: TypeAlias = "str | int | float | bool | np.generic | np.ndarray"

#: The attributes of an HDF5 group or dataset, as written or read.
Attrs: TypeAlias = "dict[str, AttrValue]"


def as_int(value: JSONValue) -> int:
    """A JSON scalar as an ``int`` (``int(value)``).

    Raises:
        TypeError: A list, mapping or ``None``.
        ValueError: A string that is not an integer.
    """
    if isinstance(value, str | int | float):  # bool is an int
        return int(value)
    raise TypeError(f"expected a number, got {value!r}")


def as_float(value: JSONValue) -> float:
    """A JSON scalar as a ``float`` (``float(value)``).

    Raises:
        TypeError: A list, mapping or ``None``.
        ValueError: A string that is not a number.
    """
    if isinstance(value, str | int | float):
        return float(value)
    raise TypeError(f"expected a number, got {value!r}")


def as_str(value: JSONValue) -> str:
    """A JSON string.

    Raises:
        TypeError: Any other value.
    """
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a string, got {value!r}")


def finite_json(value: JSONValue) -> JSONValue:
    """``value`` with every NaN and ±inf float replaced by ``None`` (JSON's ``null``).

    JSON has no NaN: an undefined metric is written as ``null``. Tuples (from
    ``dataclasses.asdict``) become lists, as ``json.dumps`` writes them.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


__all__ = [
    "AttrValue",
    "Attrs",
    "JSONObject",
    "JSONValue",
    "as_float",
    "as_int",
    "as_str",
    "finite_json",
]
