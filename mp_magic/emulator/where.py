"""The documented subset of Mixpanel's segmentation-expression grammar, for `where`.

A small tokenizer, a recursive-descent parser and a compiler to Python closures: a compiled
expression is evaluated once per profile, so a 200,000-profile scan must stay cheap. Semantics
follow Mixpanel's reference: ``==`` is false on a type mismatch, other comparisons across types are
undefined, ``in`` on strings is a substring test, ``and``/``or`` treat undefined as false, division
by zero is undefined, ``+`` joins strings and ISO datetimes compare as strings.

Grammar (lowest precedence first)::

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | cmp
    cmp     := add ((== != > >= < <= | in | not in) add)*
    add     := mul (("+" | "-") mul)*
    mul     := unary (("*" | "/" | "%") unary)*
    unary   := "-" unary | primary
    primary := NUMBER | STRING | true | false | "(" expr ")" | "[" [expr ("," expr)*] "]"
             | (properties | user | behaviors) "[" STRING "]"
             | (defined | floor | round | ceil | boolean | number | string | datetime) "(" expr ")"
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

__all__ = [
    "UNDEFINED",
    "CompiledWhere",
    "WhereSyntaxError",
    "compile_where",
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

BehaviorCount = Callable[[str, int], int]
Evaluator = Callable[[Mapping[str, Any], int, BehaviorCount], Any]


class WhereSyntaxError(ValueError):
    """A `where` expression that does not parse; the message names the position."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"invalid where expression: {message} at position {position}")
        self.position = position


@dataclass(frozen=True)
class _Token:
    kind: str  # num, str, name, op, end
    value: Any
    pos: int

    def show(self) -> str:
        if self.kind == "end":
            return "end of expression"
        if self.kind == "str":
            return "string " + orjson.dumps(self.value).decode()
        return repr(str(self.value))


_OPS = ("==", "!=", ">=", "<=", ">", "<", "+", "-", "*", "/", "%", "(", ")", "[", "]", ",")
_NUMBER = re.compile(r"(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "\\": "\\",
    '"': '"',
    "'": "'",
    "/": "/",
    "b": "\b",
    "f": "\f",
}


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in "\"'":
            start, quote, i = i, ch, i + 1
            out: list[str] = []
            while True:
                if i >= n:
                    raise WhereSyntaxError("unterminated string", start)
                c = text[i]
                if c == quote:
                    i += 1
                    break
                if c == "\\":
                    if i + 1 >= n:
                        raise WhereSyntaxError("unterminated string", start)
                    esc = text[i + 1]
                    if esc == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 2 : i + 6]):
                        out.append(chr(int(text[i + 2 : i + 6], 16)))
                        i += 6
                        continue
                    if esc not in _ESCAPES:
                        raise WhereSyntaxError(f"unknown escape '\\{esc}' in string", i)
                    out.append(_ESCAPES[esc])
                    i += 2
                    continue
                out.append(c)
                i += 1
            tokens.append(_Token("str", "".join(out), start))
            continue
        m = _NUMBER.match(text, i)
        if m:
            raw = m.group()
            value: Any = float(raw) if any(c in raw for c in ".eE") else int(raw)
            tokens.append(_Token("num", value, i))
            i = m.end()
            continue
        m = _NAME.match(text, i)
        if m:
            tokens.append(_Token("name", m.group(), i))
            i = m.end()
            continue
        for op in _OPS:
            if text.startswith(op, i):
                tokens.append(_Token("op", op, i))
                i += len(op)
                break
        else:
            if ch == "=":
                raise WhereSyntaxError("'=' is not an operator (use '==')", i)
            if ch in "&|!":
                raise WhereSyntaxError(f"unexpected character {ch!r} (use and / or / not)", i)
            raise WhereSyntaxError(f"unexpected character {ch!r}", i)
    tokens.append(_Token("end", None, n))
    return tokens


# --------------------------------------------------------------------------- value semantics


def _is_num(v: Any) -> bool:
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


def _eq(a: Any, b: Any) -> bool:
    if a is UNDEFINED or b is UNDEFINED or a is None or b is None:
        return False
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if _is_num(a) and _is_num(b):
        return bool(a == b)
    if type(a) is type(b):
        return bool(a == b)
    return False


def _order(op: str) -> Callable[[Any, Any], Any]:
    import operator

    fn: Callable[[Any, Any], bool] = {
        ">": operator.gt,
        ">=": operator.ge,
        "<": operator.lt,
        "<=": operator.le,
    }[op]

    def compare(a: Any, b: Any) -> Any:
        if _is_num(a) and _is_num(b):
            return fn(a, b)
        if isinstance(a, str) and isinstance(b, str):
            return fn(a, b)
        return UNDEFINED

    return compare


def _in(a: Any, b: Any) -> Any:
    if isinstance(b, str):
        return a in b if isinstance(a, str) else UNDEFINED
    if isinstance(b, list):
        return any(_eq(a, x) for x in b)
    return UNDEFINED


def _not_in(a: Any, b: Any) -> Any:
    r = _in(a, b)
    return UNDEFINED if r is UNDEFINED else not r


def _add(a: Any, b: Any) -> Any:
    if _is_num(a) and _is_num(b):
        return a + b
    if isinstance(a, str) and isinstance(b, str):
        return a + b
    return UNDEFINED


def _arith(op: str) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if not (_is_num(a) and _is_num(b)):
            return UNDEFINED
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if b == 0:
            return UNDEFINED
        if op == "/":
            q = a / b
            return int(q) if isinstance(a, int) and isinstance(b, int) and a % b == 0 else q
        # `%` keeps the sign of the dividend, as in JavaScript.
        if isinstance(a, int) and isinstance(b, int):
            r = abs(a) % abs(b)
            return r if a >= 0 else -r
        return math.fmod(a, b)

    return apply


def _js_round(x: float) -> int:
    return math.floor(x + 0.5)


_NUMERIC_STRING = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")


def _to_number(v: Any) -> Any:
    if isinstance(v, bool):
        return 1 if v else 0
    if _is_num(v):
        return v
    if isinstance(v, str) and _NUMERIC_STRING.fullmatch(v):
        s = v.strip()
        if re.fullmatch(r"[+-]?\d+", s):
            return int(s)
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
    if _is_num(v):
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
        if not _is_num(v) or (isinstance(v, float) and not math.isfinite(v)):
            return UNDEFINED
        return fn(v)

    return apply


_FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    "defined": lambda v: v is not UNDEFINED and v is not None,
    "floor": _rounding(math.floor),
    "ceil": _rounding(math.ceil),
    "round": _rounding(_js_round),
    "boolean": _to_boolean,
    "number": _to_number,
    "string": _to_string,
    "datetime": _to_datetime,
}
_ACCESSORS = ("properties", "user", "behaviors")
_CMP_OPS = ("==", "!=", ">", ">=", "<", "<=")


def _binary(fn: Callable[[Any, Any], Any], left: Evaluator, right: Evaluator) -> Evaluator:
    def ev(p: Mapping[str, Any], i: int, b: BehaviorCount) -> Any:
        return fn(left(p, i, b), right(p, i, b))

    return ev


def _const(value: Any) -> Evaluator:
    def ev(p: Mapping[str, Any], i: int, b: BehaviorCount) -> Any:
        return value

    return ev


# --------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.k = 0
        self.behaviors: set[str] = set()
        self.constant: dict[int, Any] = {}  # id(evaluator) -> value, for literal-only folding

    @property
    def tok(self) -> _Token:
        return self.tokens[self.k]

    def next(self) -> _Token:
        t = self.tokens[self.k]
        self.k += 1
        return t

    def is_op(self, *ops: str) -> bool:
        return self.tok.kind == "op" and self.tok.value in ops

    def is_name(self, *names: str) -> bool:
        return self.tok.kind == "name" and self.tok.value in names

    def expect_op(self, op: str) -> _Token:
        if not self.is_op(op):
            raise WhereSyntaxError(f"expected '{op}' but found {self.tok.show()}", self.tok.pos)
        return self.next()

    def const(self, value: Any) -> Evaluator:
        ev = _const(value)
        self.constant[id(ev)] = value
        return ev

    def parse(self) -> Evaluator:
        if self.tok.kind == "end":
            raise WhereSyntaxError("empty expression", 0)
        ev = self.parse_or()
        if self.tok.kind != "end":
            raise WhereSyntaxError(f"unexpected {self.tok.show()}", self.tok.pos)
        return ev

    def parse_or(self) -> Evaluator:
        left = self.parse_and()
        while self.is_name("or"):
            self.next()
            right = self.parse_and()
            left = _binary(lambda a, b: truthy(a) or truthy(b), left, right)
        return left

    def parse_and(self) -> Evaluator:
        left = self.parse_not()
        while self.is_name("and"):
            self.next()
            right = self.parse_not()
            left = _binary(lambda a, b: truthy(a) and truthy(b), left, right)
        return left

    def parse_not(self) -> Evaluator:
        if self.is_name("not") and not (
            self.tokens[self.k + 1].kind == "name" and self.tokens[self.k + 1].value == "in"
        ):
            self.next()
            inner = self.parse_not()

            def ev(p: Mapping[str, Any], i: int, b: BehaviorCount) -> Any:
                return not truthy(inner(p, i, b))

            return ev
        return self.parse_cmp()

    def parse_cmp(self) -> Evaluator:
        left = self.parse_add()
        while True:
            fn: Callable[[Any, Any], Any]
            if self.is_op(*_CMP_OPS):
                op = self.next().value
                if op == "==":
                    fn = _eq
                elif op == "!=":
                    fn = _ne
                else:
                    fn = _order(op)
            elif self.is_name("in"):
                self.next()
                fn = _in
            elif (
                self.is_name("not")
                and self.tokens[self.k + 1].kind == "name"
                and (self.tokens[self.k + 1].value == "in")
            ):
                self.k += 2
                fn = _not_in
            else:
                return left
            right = self.parse_add()
            left = _binary(fn, left, right)

    def parse_add(self) -> Evaluator:
        left = self.parse_mul()
        while self.is_op("+", "-"):
            op = self.next().value
            right = self.parse_mul()
            left = _binary(_add if op == "+" else _arith("-"), left, right)
        return left

    def parse_mul(self) -> Evaluator:
        left = self.parse_unary()
        while self.is_op("*", "/", "%"):
            op = self.next().value
            right = self.parse_unary()
            left = _binary(_arith(op), left, right)
        return left

    def parse_unary(self) -> Evaluator:
        if self.is_op("-"):
            self.next()
            inner = self.parse_unary()
            if id(inner) in self.constant and _is_num(self.constant[id(inner)]):
                return self.const(-self.constant[id(inner)])

            def ev(p: Mapping[str, Any], i: int, b: BehaviorCount) -> Any:
                v = inner(p, i, b)
                return -v if _is_num(v) else UNDEFINED

            return ev
        return self.parse_primary()

    def parse_primary(self) -> Evaluator:
        t = self.tok
        if t.kind in ("num", "str"):
            self.next()
            return self.const(t.value)
        if t.kind == "op" and t.value == "(":
            self.next()
            inner = self.parse_or()
            self.expect_op(")")
            return inner
        if t.kind == "op" and t.value == "[":
            return self.parse_list()
        if t.kind == "name":
            name = t.value
            if name in ("true", "false"):
                self.next()
                return self.const(name == "true")
            if name in _ACCESSORS:
                return self.parse_access()
            if name in _FUNCTIONS:
                return self.parse_call()
            if name in ("and", "or", "not", "in"):
                raise WhereSyntaxError(f"unexpected keyword '{name}'", t.pos)
            raise WhereSyntaxError(
                f"unknown name '{name}' (expected properties[\"...\"], a literal or a function)",
                t.pos,
            )
        if t.kind == "end":
            raise WhereSyntaxError("unexpected end of expression", t.pos)
        raise WhereSyntaxError(f"unexpected {t.show()}", t.pos)

    def parse_list(self) -> Evaluator:
        self.expect_op("[")
        items: list[Evaluator] = []
        if not self.is_op("]"):
            items.append(self.parse_or())
            while self.is_op(","):
                self.next()
                items.append(self.parse_or())
        self.expect_op("]")
        if all(id(x) in self.constant for x in items):
            return self.const([self.constant[id(x)] for x in items])

        def ev(p: Mapping[str, Any], i: int, b: BehaviorCount) -> Any:
            return [x(p, i, b) for x in items]

        return ev

    def parse_access(self) -> Evaluator:
        accessor = self.next().value
        self.expect_op("[")
        key_tok = self.tok
        if key_tok.kind != "str":
            raise WhereSyntaxError(
                f"{accessor}[...] needs a quoted name, found {key_tok.show()}", key_tok.pos
            )
        self.next()
        self.expect_op("]")
        key: str = key_tok.value
        if accessor == "behaviors":
            self.behaviors.add(key)

            def behavior(p: Mapping[str, Any], i: int, b: BehaviorCount) -> Any:
                return b(key, i)

            return behavior

        def prop(p: Mapping[str, Any], i: int, b: BehaviorCount) -> Any:
            v = p.get(key, UNDEFINED)
            return UNDEFINED if v is None else v

        return prop

    def parse_call(self) -> Evaluator:
        name_tok = self.next()
        fn = _FUNCTIONS[name_tok.value]
        self.expect_op("(")
        if self.is_op(")"):
            raise WhereSyntaxError(f"{name_tok.value}() takes exactly one argument", self.tok.pos)
        arg = self.parse_or()
        if self.is_op(","):
            raise WhereSyntaxError(f"{name_tok.value}() takes exactly one argument", self.tok.pos)
        self.expect_op(")")
        if id(arg) in self.constant:
            value = fn(self.constant[id(arg)])
            if name_tok.value == "datetime" and value is UNDEFINED:
                raise WhereSyntaxError(
                    f"datetime() cannot read {self.constant[id(arg)]!r} as a date", name_tok.pos
                )
            return self.const(value)

        def ev(p: Mapping[str, Any], i: int, b: BehaviorCount) -> Any:
            return fn(arg(p, i, b))

        return ev


def _ne(a: Any, b: Any) -> bool:
    return not _eq(a, b)


@dataclass(frozen=True)
class CompiledWhere:
    """A parsed `where`: call `matches(properties, index, behavior_count)` per profile."""

    source: str
    evaluator: Evaluator
    behaviors: frozenset[str]

    def evaluate(
        self,
        properties: Mapping[str, Any],
        index: int = 0,
        behavior_count: BehaviorCount | None = None,
    ) -> Any:
        return self.evaluator(properties, index, behavior_count or _no_behaviors)

    def matches(
        self, properties: Mapping[str, Any], index: int, behavior_count: BehaviorCount
    ) -> bool:
        return truthy(self.evaluator(properties, index, behavior_count))


def _no_behaviors(name: str, index: int) -> int:
    raise KeyError(name)


def compile_where(text: str) -> CompiledWhere:
    """Parse ``text``; raises `WhereSyntaxError` (a ValueError) with the position on bad input."""
    parser = _Parser(text)
    ev = parser.parse()
    return CompiledWhere(text, ev, frozenset(parser.behaviors))
