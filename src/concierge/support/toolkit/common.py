"""Tools every domain shares (``calculate``, ``transfer_to_human_agents``) and text helpers for look-ups."""

from __future__ import annotations

from typing import Any

from concierge.support.toolkit.tools import Db, ToolError, generic


def fold_text(text: str) -> str:
    """Case- and accent-insensitive form of a name or email, for look-ups."""
    import unicodedata

    decomposed = unicodedata.normalize("NFKD", text.strip())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


_ARITH_CHARS = set("0123456789+-*/(). ")


def _arith(node: Any) -> float | int:
    import ast
    import operator

    binary = {
        ast.Add: operator.add,
        ast.Sub: operator.sub,
        ast.Mult: operator.mul,
        ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv,
    }
    if isinstance(node, ast.Expression):
        return _arith(node.body)
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
        value = _arith(node.operand)
        return value if isinstance(node.op, ast.UAdd) else -value
    if isinstance(node, ast.BinOp) and type(node.op) in binary:
        return binary[type(node.op)](_arith(node.left), _arith(node.right))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        base, exponent = _arith(node.left), _arith(node.right)
        if abs(exponent) > 64 or abs(base) > 1e12:  # keep `9**9**9` from hanging the server
            raise ToolError("Exponent too large")
        return base**exponent
    raise ToolError("Invalid expression")


@generic
def calculate(db: Db, expression: str) -> str:
    """
    Calculate the result of a mathematical expression.

    Args:
        expression: The mathematical expression to calculate, such as '2 + 2'. The expression can contain numbers, operators (+, -, *, /), parentheses, and spaces.

    Returns:
        The result of the mathematical expression.

    Raises:
        ValueError: If the expression is invalid.
    """
    import ast

    if not all(char in _ARITH_CHARS for char in expression):
        raise ToolError("Invalid characters in expression")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ToolError("Invalid expression") from None
    try:
        value = _arith(tree)
    except ZeroDivisionError:
        raise ToolError("Division by zero") from None
    except OverflowError:
        raise ToolError("Result too large") from None
    return str(round(float(value), 2))


@generic
def transfer_to_human_agents(db: Db, summary: str) -> str:
    """
    Transfer the user to a human agent, with a summary of the user's issue.
    Only transfer if
     -  the user explicitly asks for a human agent
     -  given the policy and the available tools, you cannot solve the user's issue.

    Args:
        summary: A summary of the user's issue.

    Returns:
        A message indicating the user has been transferred to a human agent.
    """
    return "Transfer successful"
