"""Query understanding: a shopper's conversation -> a :class:`StructuredQuery` -> hard constraints.

Two readers, merged:

* a **rule parser** over the catalogue's own vocabulary (:class:`ShopVocabulary`): price phrases
  ("under $50", "between 20 and 40", "cheaper"), category path words and synonyms ("trainers" ->
  Sneakers), attribute values (colours, materials, sizes, booleans such as "waterproof"), brands,
  negations ("not leather", "no wool", "without red") and occasions (gift, wedding, hiking ...);
* the **model**, by constrained decoding (a ``json_schema`` response format listing the store's
  categories and attribute names), see :func:`model_delta`. Its output is validated with jsonschema
  and every hard value must be evidenced by the shopper's own words, or it is dropped.

Rules win on the hard constraints they detected with certainty; the model only fills gaps. A turn is a
*delta* applied to the previous turn's query (:func:`update_query`): "cheaper", "in blue", "not
leather" refine it, "show me boots instead" switches category and keeps the budget, a fresh request
starts over. A request with no category, attribute or catalogue keyword at all is *vague*.

Modules: :mod:`.errors` (``ShopError`` and its kinds), :mod:`.structured` (:class:`StructuredQuery`),
:mod:`.vocabulary` (:class:`ShopVocabulary`), :mod:`.rules` (:func:`parse_rules`), :mod:`.model` (the
model's reading and :func:`merge_deltas`), :mod:`.update` (:func:`update_query`, :func:`constraints_for`).
"""

from __future__ import annotations

from concierge.shop.query.errors import (
    CatalogNotFoundError,
    ProductNotFoundError,
    ShopError,
    ShopperNotFoundError,
    ShopRequestError,
)
from concierge.shop.query.matching import (
    MatchedHit,
    classify_hits,
    mark,
    near_alternatives,
    present_matches,
    unmet_constraints,
    unverified_terms,
)
from concierge.shop.query.model import (
    QUERY_SYSTEM_PROMPT,
    merge_deltas,
    model_request,
    model_schema,
    sanitize_model_output,
)
from concierge.shop.query.numbers import normalise_numbers
from concierge.shop.query.rules import TurnDelta, parse_rules
from concierge.shop.query.structured import (
    SORTS,
    STRUCTURED_QUERY_SCHEMA,
    OptionRange,
    Sort,
    StructuredQuery,
    validate_query_dict,
)
from concierge.shop.query.update import (
    consistent_query,
    constraints_for,
    gender_of,
    is_vague,
    search_text,
    update_query,
)
from concierge.shop.query.vocabulary import (
    COLOUR_SYNONYMS,
    GENDER_WORDS,
    GENERIC_WORDS,
    OCCASIONS,
    SYNONYMS,
    VALUE_SYNONYMS,
    ShopVocabulary,
    normalise_text,
    phrase_regex,
)

__all__ = [
    "COLOUR_SYNONYMS",
    "CatalogNotFoundError",
    "GENDER_WORDS",
    "GENERIC_WORDS",
    "MatchedHit",
    "OCCASIONS",
    "OptionRange",
    "ProductNotFoundError",
    "QUERY_SYSTEM_PROMPT",
    "SORTS",
    "STRUCTURED_QUERY_SCHEMA",
    "SYNONYMS",
    "ShopError",
    "ShopRequestError",
    "ShopVocabulary",
    "ShopperNotFoundError",
    "Sort",
    "StructuredQuery",
    "TurnDelta",
    "VALUE_SYNONYMS",
    "classify_hits",
    "consistent_query",
    "constraints_for",
    "gender_of",
    "is_vague",
    "merge_deltas",
    "model_request",
    "model_schema",
    "near_alternatives",
    "mark",
    "normalise_numbers",
    "present_matches",
    "normalise_text",
    "parse_rules",
    "phrase_regex",
    "sanitize_model_output",
    "search_text",
    "unmet_constraints",
    "unverified_terms",
    "update_query",
    "validate_query_dict",
]
