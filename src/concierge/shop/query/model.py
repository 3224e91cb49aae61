"""The model's reading (constrained decoding), validated and checked against the shopper's words,
and merged with the rules' reading."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema

from concierge.shop.query.rules import _CHEAPER, _NEGATION, _PRICIER, _SORT_ASC, _SORT_DESC, TurnDelta, _num
from concierge.shop.query.structured import SORTS, StructuredQuery
from concierge.shop.query.vocabulary import ShopVocabulary, normalise_text, phrase_regex
from concierge.shop.search import tokenize


def model_validator(vocab: ShopVocabulary) -> Any:
    """A compiled validator of :func:`model_schema` (built once per vocabulary)."""
    cached = getattr(vocab, "_validator", None)
    if cached is None:
        schema = model_schema(vocab)
        cached = jsonschema.validators.validator_for(schema)(schema)
        vocab._validator = cached  # type: ignore[attr-defined]
    return cached


def model_schema(vocab: ShopVocabulary) -> dict[str, Any]:
    """The JSON schema the model decodes under: small, bounded, every field required (grammar-friendly)."""
    if vocab._schema is None:
        vocab._schema = _model_schema(vocab)
    return vocab._schema


def _model_schema(vocab: ShopVocabulary, max_attributes: int = 4) -> dict[str, Any]:
    keys = sorted(k for k in vocab.attr_counts if k != vocab.gender_key) + ["brand"]
    return {
        "type": "object",
        "properties": {
            "keywords": {"type": "string", "maxLength": 60},
            "category": {"enum": [*vocab.leaves, *vocab.top_level, None]},
            "price_min": {"type": ["number", "null"], "minimum": 0},
            "price_max": {"type": ["number", "null"], "minimum": 0},
            "attributes": {
                "type": "array",
                "maxItems": max_attributes,
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"enum": sorted(set(keys))},
                        "value": {"type": "string", "maxLength": 30},
                    },
                    "required": ["name", "value"],
                    "additionalProperties": False,
                },
            },
            "occasion": {"type": ["string", "null"], "maxLength": 20},
            "exclusions": {"type": "array", "maxItems": 3, "items": {"type": "string", "maxLength": 30}},
            "sort": {"enum": list(SORTS)},
        },
        "required": [
            "keywords",
            "category",
            "price_min",
            "price_max",
            "attributes",
            "occasion",
            "exclusions",
            "sort",
        ],
        "additionalProperties": False,
    }


QUERY_SYSTEM_PROMPT = """You turn a shopper's latest message into a JSON search query for an online store.
Use only the store's categories and attribute values listed below. Leave a field null or empty unless the
shopper clearly asked for it. Prices are numbers in the store's currency.
{vocabulary}"""


def model_request(
    messages: Sequence[Mapping[str, Any]], vocab: ShopVocabulary, previous: StructuredQuery | None
) -> dict[str, Any]:
    convo = [m for m in messages if m.get("role") in ("user", "assistant") and m.get("content")][-5:]
    transcript = "\n".join(f"{m['role']}: {str(m['content'])[:400]}" for m in convo)
    prev = json.dumps(previous.model_dump(exclude_defaults=True)) if previous else "none"
    return {
        "messages": [
            {"role": "system", "content": QUERY_SYSTEM_PROMPT.format(vocabulary=vocab.prompt_vocabulary())},
            {
                "role": "user",
                "content": f"Conversation:\n{transcript}\n\nPrevious query: {prev}\n"
                "JSON query for what the shopper asks in their LAST message:",
            },
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "shop_query", "schema": model_schema(vocab), "strict": True},
        },
        "temperature": 0,
        "max_tokens": 160,
    }


def _mentioned(value: str, text: str) -> bool:
    return bool(value) and phrase_regex(value, plural=True).search(normalise_text(text)) is not None


def sanitize_model_output(
    content: str, vocab: ShopVocabulary, message: str
) -> tuple[TurnDelta | None, list[str]]:
    """The model's JSON as a delta, keeping only values the schema allows AND the message evidences."""
    dropped: list[str] = []
    try:
        data = json.loads(content)
    except (json.JSONDecodeError, TypeError):
        return None, ["not JSON"]
    try:
        model_validator(vocab).validate(data)
    except jsonschema.ValidationError as exc:
        return None, [f"schema: {exc.message[:120]}"]
    d = TurnDelta(source="model")
    q = d.query
    text = normalise_text(message)
    numbers = {_num(n) for n in re.findall(r"\d{1,6}(?:[.,]\d{1,2})?", text)}
    for name in ("price_min", "price_max"):
        value = data.get(name)
        if value is None:
            continue
        if float(value) in numbers:
            setattr(q, name, float(value))
        else:
            dropped.append(f"{name}={value} (not in the message)")
    if q.price_min is not None and q.price_max is not None and q.price_min > q.price_max:
        dropped.append("price_min > price_max")
        q.price_min = q.price_max = None
    category = data.get("category")
    if category:
        evidence = {
            p.pattern
            for p, paths, _, _ in vocab._category_phrases
            if any(
                path == category or category.startswith(path + " > ") or path.startswith(category + " > ")
                for path in paths
            )
            and p.search(text)
        }
        if evidence:
            q.category = category
        else:
            dropped.append(f"category={category} (no word of it in the message)")
    for item in data.get("attributes") or []:
        key, value = item["name"], str(item["value"]).strip().lower()
        known = vocab.attr_counts.get(key, Counter())
        if key == "brand":
            brand = vocab.brands.get(value)
            if brand and _mentioned(value, text):
                q.attributes.setdefault("brand", []).append(brand)
            else:
                dropped.append(f"brand={value}")
        elif value in known and _mentioned(value, text) and not _negated(value, text):
            q.attributes.setdefault(key, []).append(value)
        else:
            dropped.append(f"{key}={value}")
    for term in data.get("exclusions") or []:
        term = str(term).strip()
        if term and _negated(term, text):
            q.exclusions.append(term)
        elif term:
            dropped.append(f"exclusion {term!r} (not negated in the message)")
    occasion = data.get("occasion")
    if occasion and _mentioned(str(occasion), text):
        q.occasion = str(occasion).lower()
    sort = data.get("sort", "relevance")
    if sort == "price_asc" and (_SORT_ASC.search(text) or _CHEAPER.search(text)):
        q.sort = "price_asc"
    elif sort == "price_desc" and (_SORT_DESC.search(text) or _PRICIER.search(text)):
        q.sort = "price_desc"
    words = [w for w in vocab.content_tokens(str(data.get("keywords") or "")) if w in set(tokenize(text))]
    q.keywords = " ".join(dict.fromkeys(words))
    d.content = words
    return d, dropped


def _negated(term: str, text: str) -> bool:
    m = phrase_regex(term, plural=True).search(text)
    if m is None:
        return False
    before = text[max(0, m.start() - 40) : m.start()]
    return bool(_NEGATION.search(before))


def merge_deltas(rules: TurnDelta, model: TurnDelta | None) -> TurnDelta:
    """Rules win on hard constraints they detected with certainty; the model fills the rest."""
    if model is None:
        return rules
    out = TurnDelta(
        query=rules.query.model_copy(deep=True),
        certain=set(rules.certain),
        gender=rules.gender,
        cheaper=rules.cheaper,
        pricier=rules.pricier,
        replace_cue=rules.replace_cue,
        content=list(rules.content),
        source="rules+model",
        n_words=rules.n_words,
        ranges=dict(rules.ranges),
    )
    q, m = out.query, model.query
    used = False
    # Once the rules have read a price phrase, the model's numbers add nothing but risk ("under 150"
    # must not also become "from 150").
    rules_priced = bool({"price_min", "price_max"} & rules.certain)
    for name in ("price_min", "price_max"):
        if not rules_priced and getattr(m, name) is not None:
            setattr(q, name, getattr(m, name))
            out.certain.add(name)
            used = True
    if q.price_min is not None and q.price_max is not None and q.price_min > q.price_max:
        q.price_min = None
    if "category" not in rules.certain and m.category:
        q.category = m.category
        used = True
    for key, values in m.attributes.items():
        if key not in q.attributes:
            q.attributes[key] = list(values)
            used = True
    for term in m.exclusions:
        if term.lower() not in {e.lower() for e in q.exclusions}:
            q.exclusions.append(term)
            used = True
    if "sort" not in rules.certain and m.sort != "relevance":
        q.sort = m.sort
        used = True
    if not q.occasion and m.occasion:
        q.occasion = m.occasion
    for w in model.content:
        if w not in out.content:
            out.content.append(w)
    q.keywords = " ".join(dict.fromkeys(out.content))
    if not used:
        out.source = "rules"
    return out
