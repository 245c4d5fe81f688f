"""Lexing of `where` expressions: text to tokens, with the error type every stage raises.

Kept apart from the parser so the character-level rules (string escapes, number forms, the
operators Mixpanel accepts) live in one place and the parser only sees tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["Token", "WhereSyntaxError", "tokenize"]


class WhereSyntaxError(ValueError):
    """A `where` expression that does not parse; the message names the position."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"invalid where expression: {message} at position {position}")
        self.position = position


@dataclass(frozen=True)
class Token:
    kind: str  # num, str, name, op, end
    value: Any
    pos: int

    def show(self) -> str:
        if self.kind == "end":
            return "end of expression"
        if self.kind == "str":
            return "string " + orjson.dumps(_clip(self.value)).decode()
        return repr(_clip(str(self.value)))


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


_MAX_NUMBER = 100
"""Digits a number literal may have (Python will not convert over 4,300 of them anyway)."""
_SHOWN = 40


def _clip(text: str) -> str:
    """Error messages quote tokens; a 50,000-character string literal is quoted by its start."""
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
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
            tokens.append(Token("str", "".join(out), start))
            continue
        m = _NUMBER.match(text, i)
        if m:
            raw = m.group()
            if len(raw) > _MAX_NUMBER:
                raise WhereSyntaxError(f"number longer than {_MAX_NUMBER} characters", i)
            value: Any = float(raw) if any(c in raw for c in ".eE") else int(raw)
            tokens.append(Token("num", value, i))
            i = m.end()
            continue
        m = _NAME.match(text, i)
        if m:
            tokens.append(Token("name", m.group(), i))
            i = m.end()
            continue
        for op in _OPS:
            if text.startswith(op, i):
                tokens.append(Token("op", op, i))
                i += len(op)
                break
        else:
            if ch == "=":
                raise WhereSyntaxError("'=' is not an operator (use '==')", i)
            if ch in "&|!":
                raise WhereSyntaxError(f"unexpected character {ch!r} (use and / or / not)", i)
            raise WhereSyntaxError(f"unexpected character {ch!r}", i)
    tokens.append(Token("end", None, n))
    return tokens
