"""The value semantics of `where`: undefined, truthiness, comparisons, arithmetic, typecasts.

Mixpanel's reference fixes these rules (``==`` is false on a type mismatch, other cross-type
comparisons are undefined, ``in`` on strings is a substring test, division by zero is undefined,
``+`` joins strings, ISO datetimes compare as strings); keeping them apart from the parser lets the
rules be read, and tested, as one table of functions.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import orjson

__all__ = [
    "FUNCTIONS",
    "UNDEFINED",
    "add",
    "arith",
    "eq",
    "in_",
    "is_num",
    "ne",
    "not_in",
    "order",
    "truthy",
]


class _Undefined:
    """The value of a missing property, of a failed typecast, of ``1 / 0``…"""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "undefined"

    def __bool__(self) -> bool:
        return False


UNDEFINED: Final = _Undefined()


def is_num(v: Any) -> bool:
    return (isinstance(v, int | float)) and not isinstance(v, bool)


def truthy(v: Any) -> bool:
    """Whether a profile is selected by an expression that evaluated to ``v``."""
    if v is UNDEFINED or v is None:
        return False
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return v != 0 and not (isinstance(v, float) and math.isnan(v))
    if isinstance(v, str | list | dict):
        return len(v) > 0
    return True


def eq(a: Any, b: Any) -> bool:
    if a is UNDEFINED or b is UNDEFINED or a is None or b is None:
        return False
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if is_num(a) and is_num(b):
        return bool(a == b)
    if type(a) is type(b):
        return bool(a == b)
    return False


def order(op: str) -> Callable[[Any, Any], Any]:
    fn: Callable[[Any, Any], bool] = {
        ">": operator.gt,
        ">=": operator.ge,
        "<": operator.lt,
        "<=": operator.le,
    }[op]

    def compare(a: Any, b: Any) -> Any:
        if is_num(a) and is_num(b):
            return fn(a, b)
        if isinstance(a, str) and isinstance(b, str):
            return fn(a, b)
        return UNDEFINED

    return compare


def in_(a: Any, b: Any) -> Any:
    if isinstance(b, str):
        return a in b if isinstance(a, str) else UNDEFINED
    if isinstance(b, list):
        return any(eq(a, x) for x in b)
    return UNDEFINED


def not_in(a: Any, b: Any) -> Any:
    r = in_(a, b)
    return UNDEFINED if r is UNDEFINED else not r


_EXACT = 2**53
"""Mixpanel's numbers are doubles: integers past 2**53 become floats, which also keeps a where of
thousands of multiplications from building ever-larger Python integers for every profile."""


def _double(v: Any) -> Any:
    return float(v) if isinstance(v, int) and not -_EXACT <= v <= _EXACT else v


def add(a: Any, b: Any) -> Any:
    if is_num(a) and is_num(b):
        return _double(a + b)
    if isinstance(a, str) and isinstance(b, str):
        return a + b
    return UNDEFINED


def arith(op: str) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if not (is_num(a) and is_num(b)):
            return UNDEFINED
        if op == "-":
            return _double(a - b)
        if op == "*":
            return _double(a * b)
        if b == 0:
            return UNDEFINED
        if op == "/":
            q = a / b
            return int(q) if isinstance(a, int) and isinstance(b, int) and a % b == 0 else q
        # `%` keeps the sign of the dividend, as in JavaScript.
        if isinstance(a, int) and isinstance(b, int):
            r = abs(a) % abs(b)
            return r if a >= 0 else -r
        if not math.isfinite(a) or math.isnan(b):
            return UNDEFINED  # math.fmod raises on these
        return math.fmod(a, b)

    return apply


def _js_round(x: float) -> int:
    return math.floor(x + 0.5)


_NUMERIC_STRING = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")


def _to_number(v: Any) -> Any:
    if isinstance(v, bool):
        return 1 if v else 0
    if is_num(v):
        return v
    if isinstance(v, str) and _NUMERIC_STRING.fullmatch(v):
        s = v.strip()
        if re.fullmatch(r"[+-]?\d+", s) and len(s) <= 300:  # int() refuses 4,300+ digits
            return _double(int(s))
        f = float(s)
        return int(f) if f.is_integer() and abs(f) < 2**53 else f
    return UNDEFINED


def _to_string(v: Any) -> Any:
    if v is UNDEFINED or v is None:
        return UNDEFINED
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 2**53:
            return str(int(v))
        return repr(v)
    return orjson.dumps(v).decode()


def _to_boolean(v: Any) -> Any:
    return truthy(v)


_DATE_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d")


def _to_datetime(v: Any) -> Any:
    """Normalise to ``YYYY-MM-DDTHH:MM:SS`` (the form profiles carry) so comparisons are textual."""
    if is_num(v):
        try:
            return datetime.fromtimestamp(float(v), UTC).strftime("%Y-%m-%dT%H:%M:%S")
        except (OverflowError, OSError, ValueError):
            return UNDEFINED
    if not isinstance(v, str):
        return UNDEFINED
    s = v.strip()
    if s.endswith("Z"):
        s = s[:-1]
    s = re.sub(r"\.\d+$", "", s)
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(s, fmt).strftime("%Y-%m-%dT%H:%M:%S")
        except ValueError:
            continue
    return UNDEFINED


def _rounding(fn: Callable[[float], int]) -> Callable[[Any], Any]:
    def apply(v: Any) -> Any:
        if not is_num(v) or (isinstance(v, float) and not math.isfinite(v)):
            return UNDEFINED
        return fn(v)

    return apply


FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    "defined": lambda v: v is not UNDEFINED and v is not None,
    "floor": _rounding(math.floor),
    "ceil": _rounding(math.ceil),
    "round": _rounding(_js_round),
    "boolean": _to_boolean,
    "number": _to_number,
    "string": _to_string,
    "datetime": _to_datetime,
}


def ne(a: Any, b: Any) -> bool:
    return not eq(a, b)
