"""Policy preconditions of write tools, as data, checked in code before every write.

A domain's flows file may list, under ``guardrails: preconditions:``, rules per write tool::

    preconditions:
      cancel_reservation:
        - require: "lookup('reservations', args.reservation_id).status != 'cancelled'"
          fail: "That reservation is already cancelled."

``require`` is an expression of :mod:`concierge.support.toolkit.expr` over:

* ``args``: the tool call's arguments;
* ``lookup(table, id)``: a record of the domain's database by id (``missing``, falsy, when absent);
  ``db``: the database itself (read only: expressions cannot assign or call mutating methods);
* ``now``: the domain's clock (``NOW`` / ``TODAY`` of the domain's modules, or ``now:`` in the
  section), ``user_id``: the identified customer, ``said``: everything the customer wrote.

:meth:`Guard.check <concierge.support.guardrails.Guard.check>` calls :meth:`Preconditions.check`
for every write, in agent and guided mode alike: a false rule refuses the write with its ``fail``
message (a template over the same variables); a rule that cannot be evaluated refuses it too
(fail closed) and names the rule. The tools stay reference-exact: these are the rules the
reference tools leave to the agent ("the API does not check ...").
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from concierge.support.toolkit.expr import MISSING, Evaluator, render_text


@dataclass(frozen=True)
class Rule:
    tool: str
    index: int
    require: str
    fail: str

    @property
    def name(self) -> str:
        return f"{self.tool}[{self.index}]"


def _evaluator(variables: Mapping[str, Any], helpers: Mapping[str, Any]) -> Any:
    """The flow evaluator plus a few helpers bound to one check (``lookup``)."""

    class _Eval(Evaluator):
        def _eval(self, node: ast.AST) -> Any:
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in helpers:
                args = [self._eval(a) for a in node.args]
                kwargs = {k.arg: self._eval(k.value) for k in node.keywords if k.arg}
                return helpers[node.func.id](*args, **kwargs)
            return super()._eval(node)

    return _Eval(variables)


@dataclass
class Preconditions:
    """The precondition rules of one domain, by write tool."""

    rules: dict[str, list[Rule]] = field(default_factory=dict)
    now: str | None = None  # overrides the domain's clock when given

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Preconditions:
        rules: dict[str, list[Rule]] = {}
        now = None
        for tool, items in (data or {}).items():
            if tool == "now":
                now = str(items)
                continue
            if not isinstance(items, list):
                raise ValueError(f"preconditions of {tool}: expected a list of {{require, fail}}")
            out = []
            for i, item in enumerate(items):
                if not isinstance(item, Mapping) or not item.get("require"):
                    raise ValueError(f"precondition {tool}[{i}]: needs 'require' (and 'fail')")
                require = str(item["require"])
                try:
                    ast.parse(require.strip(), mode="eval")
                except SyntaxError as exc:
                    raise ValueError(
                        f"precondition {tool}[{i}]: bad expression {require!r}: {exc.msg}"
                    ) from None
                fail = str(item.get("fail") or f"This change is not allowed by the policy ({tool}[{i}]).")
                out.append(Rule(tool, i, require, fail))
            rules[tool] = out
        return cls(rules, now)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def check(
        self,
        domain: Any,
        tool: str,
        arguments: Mapping[str, Any],
        *,
        user_id: str | None = None,
        said: str = "",
    ) -> str | None:
        """The ``fail`` message of the first rule of ``tool`` that does not hold, or None."""
        rules = self.rules.get(tool)
        if not rules:
            return None
        from concierge.support.toolkit.expr import MISSING

        db = getattr(domain, "db", None) or {}
        variables = {
            "args": dict(arguments or {}),
            "db": db,
            "now": self.now or domain_clock(domain),
            "user_id": user_id,
            "said": said or "",
        }
        helpers = {"lookup": lambda table, key: _lookup(db, table, key)}
        for rule in rules:
            try:
                ok = _evaluator(variables, helpers).eval(rule.require)
                if ok is MISSING:
                    ok = False
            except Exception as exc:  # noqa: BLE001 - fail closed on any evaluation error
                return (
                    f"Refused: the policy check {rule.name} could not be evaluated ({exc}); "
                    "no change is made."
                )
            if not ok:
                return _render(rule.fail, {**variables, "rule": rule.name}, helpers)
        return None


_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


def _render(template: str, variables: Mapping[str, Any], helpers: Mapping[str, Any]) -> str:
    """Fill the ``{expr}`` placeholders of a fail message (with ``lookup``); a placeholder that
    cannot be evaluated is left out, the refusal stands."""

    def fill(match: re.Match[str]) -> str:
        try:
            value = _evaluator(variables, helpers).eval(match.group(1))
        except Exception:  # noqa: BLE001 - an unrenderable part of the message still refuses
            return "?"
        return render_text("{value}", {"value": value})

    return _PLACEHOLDER.sub(fill, template)


def _lookup(db: Mapping[str, Any], table: Any, key: Any) -> Any:

    records = db.get(table) if isinstance(db, Mapping) and isinstance(table, str) else None
    if not isinstance(records, Mapping) or not isinstance(key, str | int):
        return MISSING
    record = records.get(key)
    if record is None and not isinstance(key, str):
        record = records.get(str(key))
    return MISSING if record is None else record


def domain_clock(domain: Any) -> str | None:
    """The domain's "now": a ``now`` attribute, else ``NOW`` / ``TODAY`` in its package or tools module."""
    value = getattr(domain, "now", None)
    if value:
        return str(value)
    name = getattr(domain, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        return None
    for module in (f"concierge.support.domains.{name}.tools", f"concierge.support.domains.{name}"):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        for attr in ("NOW", "TODAY"):
            value = getattr(mod, attr, None)
            if value:
                return str(value)
    return None
