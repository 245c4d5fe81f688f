"""The documented subset of Mixpanel's segmentation-expression grammar, for `where`.

A recursive-descent parser (tokens from `where_tokens`, value rules from `where_values`) and a
compiler to Python closures: a compiled
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

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .where_tokens import Token, WhereSyntaxError, tokenize
from .where_values import (
    FUNCTIONS,
    UNDEFINED,
    add,
    arith,
    eq,
    in_,
    is_num,
    ne,
    not_in,
    order,
    truthy,
)

__all__ = [
    "MAX_WHERE_DEPTH",
    "UNDEFINED",
    "CompiledWhere",
    "WhereSyntaxError",
    "compile_where",
    "truthy",
]

MAX_WHERE_DEPTH = 64
"""Nesting levels a `where` may use; deeper ones are refused with a WhereSyntaxError."""

BehaviorCount = Callable[[str, int], int]
Evaluator = Callable[[Mapping[str, Any], int, BehaviorCount], Any]

_ACCESSORS = ("properties", "user", "behaviors")
_CMP_OPS = ("==", "!=", ">", ">=", "<", "<=")


def _chain(first: Evaluator, steps: list[tuple[Callable[[Any, Any], Any], Evaluator]]) -> Evaluator:
    """A left fold ``((first op1 e1) op2 e2) ...`` evaluated in a loop, not by nesting closures:
    a `where` of thousands of terms must not recurse once per term at evaluation."""
    if not steps:
        return first

    def ev(p: Mapping[str, Any], i: int, b: BehaviorCount) -> Any:
        v = first(p, i, b)
        for fn, right in steps:
            v = fn(v, right(p, i, b))
        return v

    return ev


def _junction(items: list[Evaluator], combine: Callable[[Iterable[bool]], bool]) -> Evaluator:
    """``or`` (``combine=any``) or ``and`` (``combine=all``) of the items, short-circuiting."""
    if len(items) == 1:
        return items[0]

    def ev(p: Mapping[str, Any], i: int, b: BehaviorCount) -> Any:
        return combine(truthy(e(p, i, b)) for e in items)

    return ev


def _const(value: Any) -> Evaluator:
    def ev(p: Mapping[str, Any], i: int, b: BehaviorCount) -> Any:
        return value

    return ev


# --------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.k = 0
        self.behaviors: set[str] = set()
        self.constant: dict[int, Any] = {}  # id(evaluator) -> value, for literal-only folding
        self.depth = 0
        self.alive: list[Evaluator] = []

    def descend(self) -> None:
        """One more level of nesting (parentheses, lists, calls, ``not``, unary ``-``); refused
        past MAX_WHERE_DEPTH so parsing (recursive) cannot exhaust the thread's stack."""
        self.depth += 1
        if self.depth > MAX_WHERE_DEPTH:
            raise WhereSyntaxError(
                f"expression nested more than {MAX_WHERE_DEPTH} levels deep", self.tok.pos
            )

    @property
    def tok(self) -> Token:
        return self.tokens[self.k]

    def next(self) -> Token:
        t = self.tokens[self.k]
        self.k += 1
        return t

    def is_op(self, *ops: str) -> bool:
        return self.tok.kind == "op" and self.tok.value in ops

    def is_name(self, *names: str) -> bool:
        return self.tok.kind == "name" and self.tok.value in names

    def expect_op(self, op: str) -> Token:
        if not self.is_op(op):
            raise WhereSyntaxError(f"expected '{op}' but found {self.tok.show()}", self.tok.pos)
        return self.next()

    def chain(
        self, first: Evaluator, steps: list[tuple[Callable[[Any, Any], Any], Evaluator]]
    ) -> Evaluator:
        """`_chain`, folded to a constant when every operand is a literal (computed once, not
        once per profile)."""
        known = self.constant
        if id(first) in known and all(id(ev) in known for _, ev in steps):
            value = known[id(first)]
            for fn, ev in steps:
                value = fn(value, known[id(ev)])
            return self.const(value)
        return _chain(first, steps)

    def const(self, value: Any) -> Evaluator:
        ev = _const(value)
        self.constant[id(ev)] = value
        self.alive.append(ev)  # an id is only unique while its object lives
        return ev

    def parse(self) -> Evaluator:
        if self.tok.kind == "end":
            raise WhereSyntaxError("empty expression", 0)
        ev = self.parse_or()
        if self.tok.kind != "end":
            raise WhereSyntaxError(f"unexpected {self.tok.show()}", self.tok.pos)
        return ev

    def parse_or(self) -> Evaluator:
        self.descend()
        items = [self.parse_and()]
        while self.is_name("or"):
            self.next()
            items.append(self.parse_and())
        self.depth -= 1
        return _junction(items, any)

    def parse_and(self) -> Evaluator:
        items = [self.parse_not()]
        while self.is_name("and"):
            self.next()
            items.append(self.parse_not())
        return _junction(items, all)

    def parse_not(self) -> Evaluator:
        if self.is_name("not") and not (
            self.tokens[self.k + 1].kind == "name" and self.tokens[self.k + 1].value == "in"
        ):
            self.next()
            self.descend()
            inner = self.parse_not()
            self.depth -= 1

            def ev(p: Mapping[str, Any], i: int, b: BehaviorCount) -> Any:
                return not truthy(inner(p, i, b))

            return ev
        return self.parse_cmp()

    def parse_cmp(self) -> Evaluator:
        first = self.parse_add()
        steps: list[tuple[Callable[[Any, Any], Any], Evaluator]] = []
        while True:
            fn: Callable[[Any, Any], Any]
            if self.is_op(*_CMP_OPS):
                op = self.next().value
                if op == "==":
                    fn = eq
                elif op == "!=":
                    fn = ne
                else:
                    fn = order(op)
            elif self.is_name("in"):
                self.next()
                fn = in_
            elif (
                self.is_name("not")
                and self.tokens[self.k + 1].kind == "name"
                and (self.tokens[self.k + 1].value == "in")
            ):
                self.k += 2
                fn = not_in
            else:
                return self.chain(first, steps)
            steps.append((fn, self.parse_add()))

    def parse_add(self) -> Evaluator:
        first = self.parse_mul()
        steps: list[tuple[Callable[[Any, Any], Any], Evaluator]] = []
        while self.is_op("+", "-"):
            op = self.next().value
            steps.append((add if op == "+" else arith("-"), self.parse_mul()))
        return self.chain(first, steps)

    def parse_mul(self) -> Evaluator:
        first = self.parse_unary()
        steps: list[tuple[Callable[[Any, Any], Any], Evaluator]] = []
        while self.is_op("*", "/", "%"):
            op = self.next().value
            steps.append((arith(op), self.parse_unary()))
        return self.chain(first, steps)

    def parse_unary(self) -> Evaluator:
        if self.is_op("-"):
            self.next()
            self.descend()
            inner = self.parse_unary()
            self.depth -= 1
            if id(inner) in self.constant and is_num(self.constant[id(inner)]):
                return self.const(-self.constant[id(inner)])

            def ev(p: Mapping[str, Any], i: int, b: BehaviorCount) -> Any:
                v = inner(p, i, b)
                return -v if is_num(v) else UNDEFINED

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
            if name in FUNCTIONS:
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
        fn = FUNCTIONS[name_tok.value]
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
