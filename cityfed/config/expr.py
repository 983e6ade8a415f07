"""Safe arithmetic expressions for derived columns in a city's config.

A city may declare a federation column as an expression over its own CSV
columns, e.g. ``source = "(high_f + low_f) / 2"``. This module parses such
text with a small recursive-descent parser into a tiny immutable syntax tree
and evaluates it with vectorised numpy float64 arithmetic. Python's ``eval``
and ``ast`` are never used.

Grammar (``+ - * /`` are left associative, ``* /`` bind tighter than
``+ -``, unary signs bind tighter than both; one comparison, lowest of all,
gives 1.0 or 0.0, e.g. a class label ``precip > 0``)::

    comparison := expression ((">" | "<" | ">=" | "<=") expression)?
    expression := term (("+" | "-") term)*
    term       := unary (("*" | "/") unary)*
    unary      := ("+" | "-") unary | primary
    primary    := NUMBER | IDENTIFIER | BACKTICKED | "(" comparison ")"

``NUMBER`` is ``2``, ``1.5``, ``.5``, ``1e-3`` or ``2.5E+3``; ``IDENTIFIER``
is ``[A-Za-z_][A-Za-z0-9_]*``; ``BACKTICKED`` is any column name between
backticks, e.g. ```wind speed (mph)```. Character positions in error
messages count from 1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from cityfed.errors import SpecError
from cityfed.typing import FloatArray

__all__ = ["Expression", "parse_expression"]

#: Deepest nesting of parentheses and unary signs accepted; keeps the
#: recursive-descent parser far from Python's recursion limit.
MAX_DEPTH = 100

_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_IDENTIFIER_TAIL = re.compile(r"[A-Za-z0-9_]")
_NUMBER_TAIL = re.compile(r"[A-Za-z0-9_.]")
_OPERATORS = frozenset("+-*/()")
_EXAMPLE = "e.g. '(high_f + low_f) / 2'"

BinaryOp = Literal["+", "-", "*", "/", ">", "<", ">=", "<="]
_COMPARISONS: frozenset[str] = frozenset({">", "<", ">=", "<="})
UnaryOp = Literal["+", "-"]


@dataclass(frozen=True)
class Number:
    """A numeric literal."""

    value: float


@dataclass(frozen=True)
class Column:
    """A reference to a CSV column by name."""

    name: str


@dataclass(frozen=True)
class Unary:
    """A unary ``+`` or ``-`` applied to an operand."""

    op: UnaryOp
    operand: Node


@dataclass(frozen=True)
class Binary:
    """A binary ``+``, ``-``, ``*`` or ``/``."""

    op: BinaryOp
    left: Node
    right: Node


Node = Number | Column | Unary | Binary


@dataclass(frozen=True)
class _Token:
    kind: Literal["number", "column", "op", "end"]
    text: str
    pos: int  # 1-based character position
    value: float = 0.0

    def describe(self) -> str:
        if self.kind == "end":
            return "the end of the expression"
        return f"{self.text!r} at position {self.pos}"


def _tokenize(text: str, where: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        pos = i + 1
        if ch.isspace():
            i += 1
        elif ch == "`":
            close = text.find("`", i + 1)
            if close < 0:
                raise SpecError(
                    f"{where}: backtick at position {pos} is not closed; "
                    "write column names as `name`"
                )
            name = text[i + 1 : close]
            if not name.strip():
                raise SpecError(
                    f"{where}: empty column name in backticks at position {pos}; "
                    "put the CSV column name between the backticks"
                )
            tokens.append(_Token("column", name, pos))
            i = close + 1
        elif ch.isascii() and (ch.isdigit() or ch == "."):
            match = _NUMBER.match(text, i)
            end = match.end() if match else i
            if match is None or (end < n and _NUMBER_TAIL.match(text, end)):
                bad = re.match(r"[A-Za-z0-9_.]*", text[i:])
                word = bad.group(0) if bad and bad.group(0) else ch
                raise SpecError(
                    f"{where}: malformed number {word!r} at position {pos}; "
                    "write numbers like 2, 1.5, .5 or 1e-3"
                )
            literal = match.group(0)
            value = float(literal)
            if not math.isfinite(value):
                raise SpecError(
                    f"{where}: number {literal!r} at position {pos} is too large for float64"
                )
            tokens.append(_Token("number", literal, pos, value))
            i = end
        elif ch.isascii() and (ch.isalpha() or ch == "_"):
            end = i + 1
            while end < n and _IDENTIFIER_TAIL.match(text[end]):
                end += 1
            if end < n and text[end] == ".":
                dotted = re.match(r"[A-Za-z0-9_.]*", text[i:])
                name = dotted.group(0) if dotted else text[i:end]
                raise SpecError(
                    f"{where}: column name {name!r} at position {pos} contains "
                    f"'.'; put it in backticks: `{name}`"
                )
            tokens.append(_Token("column", text[i:end], pos))
            i = end
        elif ch in "<>":
            op = text[i : i + 2] if text.startswith("=", i + 1) else ch
            tokens.append(_Token("op", op, pos))
            i += len(op)
        elif ch == "=":
            raise SpecError(
                f"{where}: '=' at position {pos} is not an operator; comparisons are "
                "> < >= <= (e.g. 'precip > 0' gives 1 or 0)"
            )
        elif ch in _OPERATORS:
            if ch == "*" and text.startswith("**", i):
                raise SpecError(
                    f"{where}: power operator '**' at position {pos} is not "
                    "supported; write x * x instead"
                )
            tokens.append(_Token("op", ch, pos))
            i += 1
        else:
            raise SpecError(
                f"{where}: unexpected character {ch!r} at position {pos}; "
                "use numbers, column names, + - * / and parentheses, and put "
                "other column names in backticks"
            )
    tokens.append(_Token("end", "", n + 1))
    return tokens


class _Parser:
    """Recursive-descent parser over a token list."""

    def __init__(self, tokens: list[_Token], where: str) -> None:
        self._tokens = tokens
        self._index = 0
        self._where = where
        self._nesting = 0

    def _peek(self) -> _Token:
        return self._tokens[self._index]

    def _advance(self) -> _Token:
        token = self._tokens[self._index]
        if token.kind != "end":
            self._index += 1
        return token

    def _error(self, message: str) -> SpecError:
        return SpecError(f"{self._where}: {message}")

    def _enter(self, token: _Token) -> None:
        self._nesting += 1
        if self._nesting > MAX_DEPTH:
            raise self._error(
                f"expression is nested more than {MAX_DEPTH} levels deep at "
                f"position {token.pos}; split it into simpler derived columns"
            )

    def parse(self) -> Node:
        if self._peek().kind == "end":
            raise self._error(f"empty expression; write an expression {_EXAMPLE}")
        node = self._comparison()
        token = self._peek()
        if token.kind == "op" and token.text in _COMPARISONS:
            raise self._error(f"chained comparison at position {token.pos}; compare two terms only")
        if token.kind != "end":
            if token.text == ")":
                raise self._error(
                    f"unmatched ')' at position {token.pos}; remove it or add a matching '('"
                )
            raise self._error(
                f"unexpected {token.describe()} after a complete expression; "
                "join terms with + - * /"
            )
        return node

    def _comparison(self) -> Node:
        node = self._expression()
        token = self._peek()
        if token.kind == "op" and token.text in _COMPARISONS:
            self._advance()
            op: BinaryOp = _COMPARISON_OPS[token.text]
            node = Binary(op, node, self._expression())
        return node

    def _expression(self) -> Node:
        node = self._term()
        while (token := self._peek()).kind == "op" and token.text in "+-":
            self._advance()
            op: BinaryOp = "+" if token.text == "+" else "-"
            node = Binary(op, node, self._term())
        return node

    def _term(self) -> Node:
        node = self._unary()
        while (token := self._peek()).kind == "op" and token.text in "*/":
            self._advance()
            op: BinaryOp = "*" if token.text == "*" else "/"
            node = Binary(op, node, self._unary())
        return node

    def _unary(self) -> Node:
        token = self._peek()
        if token.kind == "op" and token.text in "+-":
            self._advance()
            self._enter(token)
            operand = self._unary()
            self._nesting -= 1
            op: UnaryOp = "+" if token.text == "+" else "-"
            return Unary(op, operand)
        return self._primary()

    def _primary(self) -> Node:
        token = self._advance()
        if token.kind == "number":
            return Number(token.value)
        if token.kind == "column":
            following = self._peek()
            if following.kind == "op" and following.text == "(":
                raise self._error(
                    f"function call {token.text}(...) at position {token.pos} is "
                    "not supported; only + - * / and parentheses are allowed"
                )
            return Column(token.text)
        if token.kind == "op" and token.text == "(":
            self._enter(token)
            node = self._comparison()
            self._nesting -= 1
            closing = self._advance()
            if not (closing.kind == "op" and closing.text == ")"):
                if closing.kind == "end":
                    raise self._error(f"'(' at position {token.pos} is not closed; add a ')'")
                raise self._error(
                    f"expected ')' to close '(' at position {token.pos}, found {closing.describe()}"
                )
            return node
        raise self._error(f"expected a number, a column name or '(' but found {token.describe()}")


def _columns(root: Node) -> frozenset[str]:
    names: set[str] = set()
    stack: list[Node] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, Column):
            names.add(node.name)
        elif isinstance(node, Unary):
            stack.append(node.operand)
        elif isinstance(node, Binary):
            stack.extend((node.left, node.right))
    return frozenset(names)


_Value = FloatArray | np.float64


_BINARY_UFUNCS: dict[str, np.ufunc] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.divide,
    ">": np.greater,
    "<": np.less,
    ">=": np.greater_equal,
    "<=": np.less_equal,
}
_COMPARISON_OPS: dict[str, BinaryOp] = {">": ">", "<": "<", ">=": ">=", "<=": "<="}


def _evaluate(root: Node, columns: Mapping[str, FloatArray]) -> _Value:
    """Evaluate the tree in post-order without recursion.

    Long chains such as ``a + b + c + ...`` build deep left-leaning trees, so
    an explicit stack keeps evaluation clear of Python's recursion limit.
    """
    results: list[_Value] = []
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if isinstance(node, Number):
            results.append(np.float64(node.value))
        elif isinstance(node, Column):
            results.append(columns[node.name])
        elif not children_done:
            stack.append((node, True))
            if isinstance(node, Unary):
                stack.append((node.operand, False))
            else:
                stack.append((node.right, False))
                stack.append((node.left, False))
        elif isinstance(node, Unary):
            operand = results.pop()
            results.append(np.negative(operand) if node.op == "-" else operand)
        else:
            right = results.pop()
            left = results.pop()
            value = _BINARY_UFUNCS[node.op](left, right)
            results.append(np.asarray(value, dtype=np.float64))
    return results[0]


@dataclass(frozen=True)
class Expression:
    """A parsed, validated arithmetic expression over named columns.

    Build one with :func:`parse_expression`.

    Attributes
    ----------
    text : str
        The expression as written in the config.
    columns : frozenset of str
        Names of the columns the expression references.
    root : Node
        The syntax tree (``Number``, ``Column``, ``Unary``, ``Binary``).
    """

    text: str
    columns: frozenset[str]
    root: Node = field(repr=False, compare=False)

    def evaluate(self, columns: Mapping[str, FloatArray], n_rows: int) -> FloatArray:
        """Evaluate the expression row-wise with float64 numpy arithmetic.

        Division by zero yields ``inf`` or ``nan`` as numpy defines it, without
        warnings; the caller checks the result for finiteness.

        Parameters
        ----------
        columns : Mapping of str to ndarray
            Column values by name; each referenced column must have shape
            ``(n_rows,)``.
        n_rows : int
            Number of rows; an expression without columns is broadcast to it.

        Returns
        -------
        ndarray of float64
            A new array of shape ``(n_rows,)``.

        Raises
        ------
        KeyError
            A referenced column is missing from `columns` (callers check
            :attr:`columns` against the CSV header first).
        ValueError
            `n_rows` is negative or a column does not have shape ``(n_rows,)``.
        """
        if n_rows < 0:
            raise ValueError(f"n_rows must be >= 0, got {n_rows}")
        arrays: dict[str, FloatArray] = {}
        for name in sorted(self.columns):
            array = np.asarray(columns[name], dtype=np.float64)
            if array.shape != (n_rows,):
                raise ValueError(f"column {name!r} has shape {array.shape}, expected ({n_rows},)")
            arrays[name] = array
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            result = _evaluate(self.root, arrays)
        out = np.empty(n_rows, dtype=np.float64)
        out[...] = result
        return out


def parse_expression(text: str, *, where: str) -> Expression:
    """Parse a derived-column expression.

    Parameters
    ----------
    text : str
        The expression, e.g. ``"(high_f + low_f) / 2"``.
    where : str
        Location prefix for error messages, e.g. ``"city.toml [columns.temp]"``.

    Returns
    -------
    Expression
        The parsed expression.

    Raises
    ------
    SpecError
        The text is not a valid expression; the one-line message starts with
        `where` and names the problem and its character position (from 1).
    """
    tokens = _tokenize(text, where)
    root = _Parser(tokens, where).parse()
    return Expression(text=text, columns=_columns(root), root=root)
