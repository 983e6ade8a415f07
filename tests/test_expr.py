from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from cityfed.config.expr import (
    MAX_DEPTH,
    Binary,
    Column,
    Expression,
    Node,
    Number,
    Unary,
    parse_expression,
)
from cityfed.errors import SpecError

WHERE = "city.toml: [columns.temp] source"


def parse(text: str) -> Expression:
    return parse_expression(text, where=WHERE)


def spec_error(text: str) -> str:
    with pytest.raises(SpecError) as info:
        parse(text)
    message = str(info.value)
    assert message.startswith(f"{WHERE}: ")
    assert "\n" not in message
    return message


# --- parsing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2", 2.0),
        ("1.5", 1.5),
        (".5", 0.5),
        ("5.", 5.0),
        ("1e-3", 1e-3),
        ("2.5E+3", 2500.0),
        ("7e2", 700.0),
        ("  42  ", 42.0),
    ],
)
def test_number_literals(text: str, value: float) -> None:
    expr = parse(text)
    assert expr.root == Number(value)
    assert expr.columns == frozenset()
    assert expr.text == text


def test_identifiers_and_backticks() -> None:
    expr = parse("_a1 + `wind speed (mph)` + B_2")
    assert expr.columns == frozenset({"_a1", "wind speed (mph)", "B_2"})
    assert expr.root == Binary(
        "+", Binary("+", Column("_a1"), Column("wind speed (mph)")), Column("B_2")
    )


def test_backticks_keep_operators_and_spaces_verbatim() -> None:
    expr = parse("` a*b (c) ` / 2")
    assert expr.root == Binary("/", Column(" a*b (c) "), Number(2.0))


def test_precedence_and_left_associativity() -> None:
    a, b, c = Column("a"), Column("b"), Column("c")
    assert parse("a + b * c").root == Binary("+", a, Binary("*", b, c))
    assert parse("a * b + c").root == Binary("+", Binary("*", a, b), c)
    assert parse("a - b - c").root == Binary("-", Binary("-", a, b), c)
    assert parse("a / b / c").root == Binary("/", Binary("/", a, b), c)
    assert parse("a - (b - c)").root == Binary("-", a, Binary("-", b, c))
    assert parse("(a + b) * c").root == Binary("*", Binary("+", a, b), c)
    assert parse("a * b / c").root == Binary("/", Binary("*", a, b), c)


def test_unary_signs() -> None:
    a, b = Column("a"), Column("b")
    assert parse("-a * b").root == Binary("*", Unary("-", a), b)
    assert parse("a * -b").root == Binary("*", a, Unary("-", b))
    assert parse("a - -b").root == Binary("-", a, Unary("-", b))
    assert parse("--a").root == Unary("-", Unary("-", a))
    assert parse("+a").root == Unary("+", a)
    assert parse("-(a + b)").root == Unary("-", Binary("+", a, b))


def test_expression_is_hashable_and_compares_by_text() -> None:
    assert parse("a + 1") == parse("a + 1")
    assert hash(parse("a + 1")) == hash(parse("a + 1"))
    assert "root" not in repr(parse("a + 1"))


def test_long_flat_chain_is_accepted() -> None:
    n = 5_000
    expr = parse(" + ".join(["a"] * n))
    out = expr.evaluate({"a": np.array([1.0, 2.0])}, 2)
    np.testing.assert_array_equal(out, [n * 1.0, n * 2.0])


def test_nesting_up_to_the_limit_is_accepted() -> None:
    depth = MAX_DEPTH - 1
    expr = parse("(" * depth + "a" + ")" * depth)
    assert expr.root == Column("a")


# --- errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("", ["empty expression"]),
        ("   ", ["empty expression"]),
        ("a $ b", ["unexpected character '$'", "position 3"]),
        ("a + é", ["unexpected character 'é'", "position 5"]),
        ("a ** 2", ["'**'", "position 3"]),
        ("sqrt(a)", ["function call sqrt(...)", "position 1"]),
        ("(a + b", ["'(' at position 1 is not closed"]),
        ("((a)", ["'(' at position 1 is not closed"]),
        ("a + b)", ["unmatched ')'", "position 6"]),
        ("a b", ["unexpected 'b' at position 3", "after a complete expression"]),
        ("2 (a)", ["unexpected '(' at position 3"]),
        ("(a b)", ["expected ')'", "position 1", "'b' at position 4"]),
        ("`wind speed", ["backtick at position 1 is not closed"]),
        ("a + ``", ["empty column name", "position 5"]),
        ("a +", ["expected a number", "end of the expression"]),
        ("* a", ["expected a number", "'*' at position 1"]),
        ("a + / b", ["'/' at position 5"]),
        ("()", ["expected a number", "')' at position 2"]),
        ("1.2.3", ["malformed number '1.2.3'", "position 1"]),
        ("a + 2x", ["malformed number '2x'", "position 5"]),
        ("1e", ["malformed number '1e'"]),
        (".", ["malformed number '.'"]),
        ("1e999", ["'1e999'", "too large"]),
        ("a\n+ $", ["'$'", "position 5"]),
        ("a; import os", ["unexpected character ';'", "position 2"]),
        ("a == b", ["'=' at position 3 is not an operator"]),
        ("a > b > c", ["chained comparison", "position 7"]),
        ("x + a.b * 2", ["column name 'a.b'", "position 5", "`a.b`"]),
    ],
)
def test_errors_name_problem_and_position(text: str, fragments: list[str]) -> None:
    message = spec_error(text)
    for fragment in fragments:
        assert fragment in message, message


def test_too_deep_nesting_is_a_spec_error() -> None:
    depth = MAX_DEPTH + 1
    assert "nested more than" in spec_error("(" * depth + "a" + ")" * depth)
    assert "nested more than" in spec_error("-" * 10_000 + "a")


# --- evaluation ---------------------------------------------------------------


def test_evaluate_mean_of_two_columns() -> None:
    expr = parse("(high_f + low_f) / 2")
    out = expr.evaluate({"high_f": np.array([80.0, 70.0]), "low_f": np.array([60.0, 50.0])}, 2)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [70.0, 60.0])


def test_evaluate_constant_broadcasts_to_n_rows() -> None:
    out = parse("-(1 + 2) * 2").evaluate({}, 4)
    assert out.shape == (4,)
    np.testing.assert_array_equal(out, np.full(4, -6.0))
    assert parse("3").evaluate({}, 0).shape == (0,)


def test_evaluate_returns_a_new_array() -> None:
    a = np.array([1.0, 2.0])
    out = parse("a").evaluate({"a": a}, 2)
    np.testing.assert_array_equal(out, a)
    out[0] = 99.0
    assert a[0] == 1.0
    assert parse("+a").evaluate({"a": a}, 2) is not a


def test_evaluate_accepts_extra_columns_and_integer_input() -> None:
    out = parse("a * 2").evaluate(
        {"a": np.array([1, 2]), "unused": np.array([])},
        2,
    )
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [2.0, 4.0])


def test_division_by_zero_gives_inf_and_nan_without_warnings() -> None:
    expr = parse("a / b")
    with np.errstate(all="raise"):
        out = expr.evaluate({"a": np.array([1.0, -1.0, 0.0]), "b": np.zeros(3)}, 3)
    assert out[0] == np.inf
    assert out[1] == -np.inf
    assert np.isnan(out[2])


def test_missing_column_raises_key_error() -> None:
    with pytest.raises(KeyError, match="b"):
        parse("a + b").evaluate({"a": np.zeros(2)}, 2)


def test_wrong_shape_or_negative_rows_raise_value_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        parse("a").evaluate({"a": np.zeros(3)}, 2)
    with pytest.raises(ValueError, match="n_rows"):
        parse("1").evaluate({}, -1)


# --- property: render a random tree, parse it back, evaluate ------------------

NAMES = ["a", "b", "c", "`x y`"]
N_ROWS = 5

numbers = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False).map(Number)
columns = st.sampled_from(NAMES).map(lambda n: Column(n.strip("`")))
trees: st.SearchStrategy[Node] = st.recursive(
    numbers | columns,
    lambda children: (
        st.builds(Unary, st.sampled_from(["+", "-"]), children)
        | st.builds(Binary, st.sampled_from(["+", "-", "*", "/"]), children, children)
    ),
    max_leaves=25,
)

PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


def render(node: Node, *, parens: bool) -> str:
    """Text for `node`: fully parenthesised, or with only necessary parens."""
    if isinstance(node, Number):
        return repr(node.value)
    if isinstance(node, Column):
        return node.name if node.name.isidentifier() else f"`{node.name}`"
    if isinstance(node, Unary):
        inner = render(node.operand, parens=parens)
        if isinstance(node.operand, Binary) and not parens:
            inner = f"({inner})"
        return f"{node.op} {inner}"
    left = render(node.left, parens=parens)
    right = render(node.right, parens=parens)
    if parens:
        return f"({left} {node.op} {right})"
    level = PRECEDENCE[node.op]
    if isinstance(node.left, Binary) and PRECEDENCE[node.left.op] < level:
        left = f"({left})"
    if isinstance(node.right, Binary) and PRECEDENCE[node.right.op] <= level:
        right = f"({right})"
    return f"{left} {node.op} {right}"


def reference(node: Node, data: dict[str, NDArray[np.float64]]) -> NDArray[np.float64]:
    """Plain numpy evaluation of the tree, the behaviour the parser must match."""
    if isinstance(node, Number):
        return np.full(N_ROWS, node.value)
    if isinstance(node, Column):
        return data[node.name]
    if isinstance(node, Unary):
        value = reference(node.operand, data)
        return -value if node.op == "-" else value
    left, right = reference(node.left, data), reference(node.right, data)
    if node.op == "+":
        return left + right
    if node.op == "-":
        return left - right
    if node.op == "*":
        return left * right
    return left / right


def tree_columns(node: Node) -> set[str]:
    if isinstance(node, Column):
        return {node.name}
    if isinstance(node, Unary):
        return tree_columns(node.operand)
    if isinstance(node, Binary):
        return tree_columns(node.left) | tree_columns(node.right)
    return set()


column_data = st.lists(
    st.floats(min_value=-1e3, max_value=1e3, allow_nan=False),
    min_size=N_ROWS,
    max_size=N_ROWS,
)


@settings(max_examples=300, deadline=None)
@given(
    tree=trees,
    parens=st.booleans(),
    raw=st.lists(column_data, min_size=4, max_size=4),
)
def test_parse_then_evaluate_matches_numpy(
    tree: Node, parens: bool, raw: list[list[float]]
) -> None:
    data = {
        name.strip("`"): np.array(values, dtype=np.float64)
        for name, values in zip(NAMES, raw, strict=True)
    }
    text = render(tree, parens=parens)
    expr = parse(text)
    assert expr.root == tree
    assert expr.columns == tree_columns(tree)
    with np.errstate(all="ignore"):
        expected = reference(tree, data)
    np.testing.assert_array_equal(expr.evaluate(data, N_ROWS), expected)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="ab1.e+-*/()` $", max_size=20))
def test_arbitrary_text_parses_or_raises_spec_error(text: str) -> None:
    try:
        expr = parse(text)
    except SpecError as exc:
        assert str(exc).startswith(f"{WHERE}: ")
        assert "\n" not in str(exc)
    else:
        data = {name: np.ones(3) for name in expr.columns}
        assert expr.evaluate(data, 3).shape == (3,)


def test_comparison_gives_a_class_label() -> None:
    expr = parse_expression("precip > 0", where="w")
    np.testing.assert_array_equal(
        expr.evaluate({"precip": np.array([0.0, 0.1, 2.0])}, 3), [0.0, 1.0, 1.0]
    )
    expr = parse_expression("(a * 2 >= b + 1) * 5", where="w")
    np.testing.assert_array_equal(
        expr.evaluate({"a": np.array([1.0, 2.0]), "b": np.array([1.0, 5.0])}, 2), [5.0, 0.0]
    )
    expr = parse_expression("t <= -1", where="w")
    np.testing.assert_array_equal(
        expr.evaluate({"t": np.array([-2.0, -1.0, 0.0])}, 3), [1.0, 1.0, 0.0]
    )
