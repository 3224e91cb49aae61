"""A small, safe expression language for declarative flows (conditions, values, templates).

Python expression syntax, evaluated by walking the AST with a whitelist: no attribute access
to Python internals, no imports, no arbitrary calls. ``order.status`` reads a dict key, so
flow files read like the data they work on. Helpers for matching what the customer said
against records (``mentions``, ``pick_items``, ``best_variant`` ...) are generic: they work on
lists of dicts with field names given in the flow file.
"""

from __future__ import annotations

import ast
import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any


class ExprError(Exception):
    """A flow expression is malformed or failed to evaluate."""


_STR_METHODS = {
    "lower",
    "upper",
    "strip",
    "startswith",
    "endswith",
    "split",
    "join",
    "replace",
    "title",
    "isdigit",
}
_DICT_METHODS = {"get", "keys", "values", "items"}
_LIST_METHODS = {"index", "count"}


def _norm(text: Any) -> str:
    return re.sub(r"[^a-z0-9]+", " ", str(text).lower()).strip()


def _stem(word: str) -> str:
    """A light plural stemmer: batteries -> battery, watches -> watch, bottles -> bottle."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith("es") and word[:-2].endswith(("s", "x", "z", "ch", "sh")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _stems(text: Any) -> list[str]:
    return [_stem(w) for w in _norm(text).split()]


def mentions(text: Any, phrase: Any) -> bool:
    """Whether every word of ``phrase`` occurs in ``text`` (case, punctuation and plurals ignored).

    A multi-word phrase also matches written as one word ("T-Shirt" in "tshirt").
    """
    words = _stems(phrase)
    if not words:
        return False
    stems = _stems(text)
    hay = " " + " ".join(stems) + " "
    if all(f" {w} " in hay for w in words):
        return True
    if len(words) > 1:
        squashed = "".join(words)
        return any(_stem(w) == squashed or w == squashed for w in _norm(text).split())
    return False


def mentions_any(text: Any, phrases: Any) -> bool:
    return any(mentions(text, p) for p in (phrases or []))


def first_mention(text: Any, phrases: Any) -> Any:
    """The phrase mentioned earliest in ``text`` (None if none is)."""
    stems = _stems(text)
    hay = " " + " ".join(stems) + " "
    best, pos = None, None
    for phrase in phrases or []:
        words = _stems(phrase)
        if not words:
            continue
        at = hay.find(" " + " ".join(words) + " ")
        if at < 0 and len(words) > 1:
            # "tshirt" for "T-Shirt": the phrase written as one word
            joined = "".join(words)
            at = next((len(" ".join(stems[:i])) for i, w in enumerate(stems) if w == joined), -1)
        if at >= 0 and (pos is None or at < pos):
            best, pos = phrase, at
    return best


_EXCEPT = re.compile(r"\b(except|but not|other than|apart from|besides|excluding|but the|keep the)\b", re.I)


# "all"/"everything" about the items of a record (not "all the items I want"): used by the flows and the
# grounding check.
ALL_ITEMS = re.compile(
    r"\b(all (of )?(the |my |these |those |its |their )?(items|things|products|of them|of it|stuff)"
    r"(?!\s+(i|that|which|you|we|associated|related|connected|not)\b)|"
    r"every (single )?(item|thing|product)|everything(?!\s+(associated|related|connected|that|which|not|to do|for|from|in))|"
    r"the (entire|whole) order|both (items|of them))\b",
    re.I,
)

def pick_items(items: Any, text: Any, field: str = "name") -> list[Any]:
    """The items whose ``field`` the customer mentioned (by full name, or by its last word when
    that is unambiguous: "the cleaner" for "Vacuum Cleaner"); "all"/"everything" takes every
    item except those named after "except" / "but not".
    """
    items = [it for it in (items or []) if isinstance(it, Mapping)]
    text = str(text or "")
    if ALL_ITEMS.search(text):
        cut = _EXCEPT.search(text)
        excluded = _named(items, text[cut.end() :], field) if cut else []
        return [it for it in items if it not in excluded]
    # In the order the customer named them ("modify the phone ...; the watch ..."): the changes are
    # listed, confirmed and applied in the customer's order.
    low = text.lower()

    def first(it: Mapping[str, Any]) -> int:
        name = str(it.get(field, "")).lower()
        words = _stems(name)
        spots = [low.find(x) for x in ([name] + words[-1:]) if x and low.find(x) >= 0]
        return min(spots) if spots else len(low)

    return sorted(_named(items, text, field), key=first)


def _named(items: list[Any], text: str, field: str) -> list[Any]:
    picked = _named_all(items, text, field)
    # The same variant twice in an order is one thing the customer named, unless they said it twice.
    seen: set[str] = set()
    out = []
    for it in picked:
        key = str(it.get("item_id") or id(it))
        if key in seen:
            continue
        seen.add(key)
        out.append(it)
    return out


def _named_all(items: list[Any], text: str, field: str) -> list[Any]:
    full = [it for it in items if mentions(text, it.get(field, ""))]
    heads: dict[str, list[Any]] = {}
    for it in items:
        words = _stems(it.get(field, ""))
        if words:
            heads.setdefault(words[-1], []).append(it)
    by_head = [
        it
        for head, group in heads.items()
        if mentions(text, head) and len({str(g.get(field)) for g in group}) == 1
        for it in group
    ]
    return [it for it in items if it in full or it in by_head]


def _mention_share(text: Any, phrase: Any) -> float:
    """1 if the whole phrase is mentioned, else the share of its words that are ("Google Home")."""
    if mentions(text, phrase):
        return 1.0
    words = [w for w in _stems(phrase) if len(w) > 2]
    if len(words) < 2:
        return 0.0
    hay = set(_stems(text))
    return 0.5 * sum(w in hay for w in words) / len(words)


def option_words(options: Mapping[str, Any]) -> list[str]:
    return [str(v) for v in (options or {}).values()]


def item_clause(text: Any, name: Any, others: Any = ()) -> str:
    """The part of ``text`` about the item ``name``: from each mention of it (full name or head noun)
    up to where another item of ``others`` is named. "Exchange the helmet for a red one, and the
    luggage set for a black one" gives the helmet "red", not "black". The whole text if the item is
    not mentioned by name (named by its id, or "all items")."""
    text = str(text or "")
    low = text.lower()

    own = str(name or "").lower().strip()
    names = {str(o or "").lower().strip() for o in others or []} - {"", own}
    heads = [(_stems(n) or [""])[-1] for n in names]

    def spots(item: str, head: bool) -> list[int]:
        if not item:
            return []
        phrases = [item, *(_stems(item)[-1:] if head else [])]
        found: set[int] = set()
        for phrase in dict.fromkeys(phrases):
            found.update(m.start() for m in re.finditer(r"(?<![\w])" + re.escape(phrase), low))
        return sorted(found)

    def head_is_own(item: str) -> bool:
        """Its head noun names only this item ("Tea Kettle" and "Electric Kettle": by full name only)."""
        head = (_stems(item) or [""])[-1]
        return sum(1 for h in heads + [(_stems(own) or [""])[-1]] if h == head) == 1

    mine = spots(own, head_is_own(own))
    if not mine:
        return text
    cuts = sorted({p for other in names for p in spots(other, head_is_own(other)) if p not in mine})
    parts: list[str] = []
    end = -1
    for start in mine:
        if start < end:
            continue
        end = next((c for c in cuts if c > start), len(text))
        parts.append(text[start:end])
    return " ... ".join(parts)


def strip_option_names(text: Any, variants: Any) -> str:
    """``text`` without the option names of ``variants``: a name like "bagged/bagless" holds both values,
    so naming the option does not say which value is wanted."""
    text = str(text or "")
    keys = {
        str(k)
        for v in (variants.values() if isinstance(variants, Mapping) else variants or [])
        if isinstance(v, Mapping)
        for k in (v.get("options") or {})
    }
    for key in sorted(keys, key=len, reverse=True):
        text = re.sub(r"['\"]?" + re.escape(key) + r"['\"]?\s*:", " ", text, flags=re.I)
    return text


def best_variant(
    variants: Any, current: Mapping[str, Any] | None, text: Any, exclude: Any = None, prefer: str = ""
) -> Any:
    """The available variant that best matches what the customer asked for.

    Score: option values the customer mentioned (strongly), then options kept from ``current``
    (weakly, "same size"), then ``prefer`` = "cheapest" | "expensive". None if the customer
    mentioned no option value of any candidate and gave no price preference.
    """
    if isinstance(variants, Mapping):
        variants = list(variants.values())
    text = strip_option_names(text, variants)
    excluded = {str(x) for x in (exclude or [])}
    current_options = dict((current or {}).get("options", {}) or {})
    best, best_key, any_mention = None, None, False
    for variant in variants or []:
        if not isinstance(variant, Mapping) or not variant.get("available", True):
            continue
        if str(variant.get("item_id")) in excluded:
            continue
        options = variant.get("options", {}) or {}
        if str(variant.get("item_id")) in str(text):
            return variant  # the customer named the exact variant
        mentioned = sum(
            _mention_share(text, v)
            for k, v in options.items()
            if str(current_options.get(k, "")).lower() != str(v).lower()
        )
        kept = sum(1 for k, v in options.items() if current_options.get(k) == v)
        any_mention = any_mention or mentioned > 0
        price = float(variant.get("price", 0) or 0)
        price_key = -price if prefer == "cheapest" else price if prefer == "expensive" else 0.0
        key = (mentioned, price_key, kept) if prefer else (mentioned, kept, -price)
        if best_key is None or key > best_key:
            best, best_key = variant, key
    if not any_mention and not prefer:
        return None
    return best


def find_payment(methods: Any, text: Any, default: Any = None) -> Any:
    """The payment method id the customer named ("gift card", "paypal", "visa ending 1234")."""
    if isinstance(methods, Mapping):
        methods = list(methods.values())
    methods = [m for m in methods or [] if isinstance(m, Mapping)]
    said = str(text or "").lower()
    for m in methods:
        if str(m.get("id", "")).lower() in said:
            return m.get("id")
        last_four = m.get("last_four")
        if last_four and str(last_four) in said:
            return m.get("id")
    for m in methods:
        source = str(m.get("source", "")).replace("_", " ")
        brand = str(m.get("brand", ""))
        if (source and mentions(said, source)) or (brand and mentions(said, brand)):
            return m.get("id")
    if "paypal" in said:
        for m in methods:
            if m.get("source") == "paypal":
                return m.get("id")
    return default


def mention_position(text: Any, phrase: Any) -> int:
    """Word position where ``phrase`` is first mentioned in ``text`` (a large number if never)."""
    words = _stems(phrase)
    stems = _stems(text)
    for i in range(len(stems) - len(words) + 1 if words else 0):
        if stems[i : i + len(words)] == words:
            return i
    return 10**6


def sort_by(items: Any, path: str, reverse: bool = False) -> list[Any]:
    """Sort dicts by the value at a dotted ``path`` ("prices.economy"); missing values go last."""

    def key(item: Any) -> tuple[int, Any]:
        value: Any = item
        for part in str(path).split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        return (value is None, value if value is not None else 0)

    return sorted(list(items or []), key=key, reverse=reverse)


def add_days(day: Any, days: Any) -> str | None:
    """``YYYY-MM-DD`` plus ``days`` (None when ``day`` is not a date)."""
    from datetime import date, timedelta

    try:
        return (date.fromisoformat(str(day)) + timedelta(days=int(days))).isoformat()
    except (TypeError, ValueError):
        return None


def days_between(start: Any, end: Any) -> int | None:
    from datetime import date

    try:
        return (date.fromisoformat(str(end)) - date.fromisoformat(str(start))).days
    except (TypeError, ValueError):
        return None


def _fmt_money(value: Any) -> str:
    try:
        return f"{float(value):.2f}"
    except (TypeError, ValueError):
        return str(value)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "sum": sum,
    "min": min,
    "max": max,
    "sorted": sorted,
    "any": any,
    "all": all,
    "str": str,
    "int": int,
    "float": float,
    "round": round,
    "abs": abs,
    "list": list,
    "set": set,
    "bool": bool,
    "dict": dict,
    "enumerate": enumerate,
    "zip": zip,
    "range": range,
    "reversed": reversed,
    "mentions": mentions,
    "mentions_any": mentions_any,
    "first_mention": first_mention,
    "pick_items": pick_items,
    "best_variant": best_variant,
    "item_clause": item_clause,
    "find_payment": find_payment,
    "option_words": option_words,
    "money": _fmt_money,
    "json": lambda v: json.dumps(v, ensure_ascii=False),
    "norm": _norm,
    "add_days": add_days,
    "mention_position": mention_position,
    "sort_by": sort_by,
    "days_between": days_between,
    "first": lambda items, default=None: next(iter(items or []), default),
    "from_json": lambda text: json.loads(text) if isinstance(text, str) else text,
}

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Mod: lambda a, b: a % b,
    ast.FloorDiv: lambda a, b: a // b,
}
_CMPOPS: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: lambda a, b: a is b,
    ast.IsNot: lambda a, b: a is not b,
}


class _Missing:
    """Reading an absent variable or key gives this falsy, printable placeholder, not a crash."""

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return ""

    def __repr__(self) -> str:
        return "missing"

    def __iter__(self):
        return iter(())

    def __len__(self) -> int:
        return 0

    def __eq__(self, other: object) -> bool:
        return other is None or isinstance(other, _Missing)

    def __hash__(self) -> int:
        return 0


MISSING = _Missing()


@functools.lru_cache(maxsize=4096)
def _parse(source: str) -> ast.Expression:
    """The parsed expression, once per distinct source: flows evaluate the same few hundred
    expressions on every turn, and the evaluator only reads the tree."""
    return ast.parse(source, mode="eval")


class Evaluator:
    def __init__(self, variables: Mapping[str, Any]) -> None:
        self.scopes: list[Mapping[str, Any]] = [variables]

    def eval(self, source: str) -> Any:
        try:
            tree = _parse(source.strip())
        except SyntaxError as exc:
            raise ExprError(f"bad expression {source!r}: {exc.msg}") from None
        try:
            return self._eval(tree.body)
        except ExprError:
            raise
        except Exception as exc:  # noqa: BLE001 - report, with the expression, any evaluation failure
            raise ExprError(f"{source!r}: {type(exc).__name__}: {exc}") from exc

    def _lookup(self, name: str) -> Any:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        if name in FUNCTIONS:
            return FUNCTIONS[name]
        return {"true": True, "false": False, "null": None, "None": None, "True": True, "False": False}.get(
            name, MISSING
        )

    def _eval(self, node: ast.AST) -> Any:  # noqa: C901 - one dispatch over node types
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return self._lookup(node.id)
        if isinstance(node, ast.Attribute):
            base = self._eval(node.value)
            if isinstance(base, Mapping):
                if node.attr not in base and node.attr in _DICT_METHODS:
                    return getattr(base, node.attr)
                return base.get(node.attr, MISSING)
            allowed = (
                _STR_METHODS if isinstance(base, str) else _LIST_METHODS if isinstance(base, list) else set()
            )
            if node.attr in allowed:
                return getattr(base, node.attr)
            return MISSING
        if isinstance(node, ast.Subscript):
            base = self._eval(node.value)
            key = self._eval(node.slice)
            if isinstance(base, Mapping):
                return base.get(key, MISSING)
            if isinstance(base, list | tuple | str):
                try:
                    return base[key]
                except (IndexError, TypeError):
                    return MISSING
            return MISSING
        if isinstance(node, ast.Slice):
            return slice(
                *(self._eval(p) if p is not None else None for p in (node.lower, node.upper, node.step))
            )
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                value: Any = True
                for v in node.values:
                    value = self._eval(v)
                    if not value:
                        return value
                return value
            value = False
            for v in node.values:
                value = self._eval(v)
                if value:
                    return value
            return value
        if isinstance(node, ast.UnaryOp):
            operand = self._eval(node.operand)
            if isinstance(node.op, ast.Not):
                return not operand
            if isinstance(node.op, ast.USub):
                return -operand
            if isinstance(node.op, ast.UAdd):
                return +operand
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](self._eval(node.left), self._eval(node.right))
        if isinstance(node, ast.Compare):
            left = self._eval(node.left)
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                right = self._eval(comparator)
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self._eval(node.body) if self._eval(node.test) else self._eval(node.orelse)
        if isinstance(node, ast.List | ast.Tuple):
            return [self._eval(e) for e in node.elts]
        if isinstance(node, ast.Set):
            return {self._eval(e) for e in node.elts}
        if isinstance(node, ast.Dict):
            return {
                self._eval(k): self._eval(v)
                for k, v in zip(node.keys, node.values, strict=True)
                if k is not None
            }
        if isinstance(node, ast.ListComp | ast.GeneratorExp | ast.SetComp):
            out = self._comprehension(node.generators, lambda: self._eval(node.elt))
            return set(out) if isinstance(node, ast.SetComp) else out
        if isinstance(node, ast.DictComp):
            pairs = self._comprehension(
                node.generators, lambda: (self._eval(node.key), self._eval(node.value))
            )
            return dict(pairs)
        if isinstance(node, ast.Call):
            # In call position a helper name wins over a variable (the `zip` slot vs zip()).
            if isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS:
                func = FUNCTIONS[node.func.id]
            else:
                func = self._eval(node.func)
            if not callable(func) or not (func in FUNCTIONS.values() or _is_bound_builtin(func)):
                raise ExprError(f"not callable in a flow expression: {ast.unparse(node.func)}")
            args = [self._eval(a) for a in node.args]
            kwargs = {k.arg: self._eval(k.value) for k in node.keywords if k.arg}
            return func(*args, **kwargs)
        if isinstance(node, ast.JoinedStr):
            return "".join(
                str(self._eval(v.value)) if isinstance(v, ast.FormattedValue) else str(v.value)
                for v in node.values
            )
        raise ExprError(f"unsupported syntax in a flow expression: {type(node).__name__}")

    def _comprehension(self, generators: list[ast.comprehension], emit: Callable[[], Any]) -> list[Any]:
        out: list[Any] = []

        def loop(i: int) -> None:
            if i == len(generators):
                out.append(emit())
                return
            gen = generators[i]
            for value in self._eval(gen.iter) or []:
                scope: dict[str, Any] = {}
                _bind(gen.target, value, scope)
                self.scopes.append(scope)
                try:
                    if all(self._eval(cond) for cond in gen.ifs):
                        loop(i + 1)
                finally:
                    self.scopes.pop()

        loop(0)
        return out


def _bind(target: ast.AST, value: Any, scope: dict[str, Any]) -> None:
    if isinstance(target, ast.Name):
        scope[target.id] = value
    elif isinstance(target, ast.Tuple | ast.List):
        for t, v in zip(target.elts, value, strict=True):
            _bind(t, v, scope)
    else:
        raise ExprError("unsupported comprehension target")


def _is_bound_builtin(func: Any) -> bool:
    owner = getattr(func, "__self__", None)
    name = getattr(func, "__name__", "")
    if isinstance(owner, str):
        return name in _STR_METHODS
    if isinstance(owner, Mapping):
        return name in _DICT_METHODS
    if isinstance(owner, list):
        return name in _LIST_METHODS
    return False


def evaluate(source: str, variables: Mapping[str, Any]) -> Any:
    return Evaluator(variables).eval(source)


_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


def render(template: Any, variables: Mapping[str, Any]) -> Any:
    """Fill ``{expr}`` placeholders. A template that is exactly one placeholder keeps the value's type."""
    if isinstance(template, list):
        return [render(t, variables) for t in template]
    if isinstance(template, dict):
        return {k: render(v, variables) for k, v in template.items()}
    if not isinstance(template, str):
        return template
    whole = _PLACEHOLDER.fullmatch(template.strip())
    if whole:
        value = evaluate(whole.group(1), variables)
        return None if value is MISSING else value
    return _PLACEHOLDER.sub(lambda m: _text(evaluate(m.group(1), variables)), template)


def render_text(template: Any, variables: Mapping[str, Any]) -> str:
    """``render`` for text shown to people: always a string (lists joined with ", ")."""
    return _text(render(template, variables))


def _text(value: Any) -> str:
    if value is None or value is MISSING:
        return ""
    if isinstance(value, list | tuple | set):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)
