"""Output-format parsers per model family: reasoning blocks and tool calls in raw text.

llama.cpp (with its jinja templates) and vLLM/SGLang (with ``--reasoning-parser`` and
``--tool-call-parser``) usually return structured ``reasoning_content`` and ``tool_calls``.
When they do not (an upstream started without parsers, a template llama.cpp does not
recognise), the model's own markup arrives as plain ``content``; this module turns it back
into OpenAI fields, for whole messages (:func:`parse_message`) and for streams
(:class:`StreamParser`, which holds back partial tags across chunk boundaries).

Formats handled (``ChatFormat.tool_calls``):

* ``hermes`` / ``qwen3-coder`` / ``glm``: ``<tool_call>…</tool_call>`` blocks whose body is
  JSON (``{"name", "arguments"}`` or a list of them: Qwen2.5/Qwen3, SmolLM2), Qwen3-Coder
  XML (``<function=NAME><parameter=K>V</parameter></function>``: Qwen3.5) or GLM key/value
  pairs (``NAME<arg_key>K</arg_key><arg_value>V</arg_value>``: GLM-4.5+). The body decides,
  so the three names are interchangeable.
* ``deepseek``: ``<｜tool▁calls▁begin｜>…<｜tool▁calls▁end｜>`` with V3/R1 calls
  (``function<｜tool▁sep｜>NAME`` + a fenced JSON block) or V3.1 calls (``NAME<｜tool▁sep｜>{json}``).
* ``kimi``: ``<|tool_calls_section_begin|>`` + ``<|tool_call_begin|>functions.NAME:0
  <|tool_call_argument_begin|>{json}<|tool_call_end|>``.
* ``minimax`` (M1: JSON lines in ``<tool_calls>``) and ``minimax-m2``
  (``<minimax:tool_call><invoke name=…><parameter name=…>…</parameter></invoke>``).
* ``llama3-json``: the whole message is ``{"name": …, "parameters": {…}}`` (optionally after
  ``<|python_tag|>``); such a message is held back to the end of the stream.
* ``harmony`` (gpt-oss) and ``none``: not parsed here (harmony's markers are special tokens
  that upstreams strip unless they parse them), so text passes through.

Reasoning (``ChatFormat.reasoning``): ``think-tags`` (the model opens ``<think>`` itself:
Qwen3, GLM, Kimi), ``think-prefilled`` (the chat template opens the block, so output starts
inside it and only ``</think>`` appears: DeepSeek-R1 and its distills, MiniMax-M2), ``none``
and ``harmony``. A stream cannot take back content it already sent, so for ``think-tags``
a ``</think>`` with no opening tag is dropped by :class:`StreamParser`, while
:func:`parse_message`, which sees the whole text, treats everything before it as
reasoning (the DeepSeek-R1 habit). That is the one case where the two disagree; catalogue
entries whose templates open the block are marked ``think-prefilled`` so both agree.

Family names (``qwen3``, ``deepseek-r1``, ...) map to formats through the plugin registry
(``register_chat_formats``): the built-in families are in :mod:`concierge.models.plugin`, and a
plugin can add its own. :class:`ChatFormat` itself lives in :mod:`concierge.models.chat_format`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from concierge import plugins
from concierge.models.catalogue import find_entry

# ChatFormat and its vocabulary live in chat_format.py (the catalogue imports them from there);
# re-exported here, where callers have always found them.
from concierge.models.chat_format import BLOCK_TOOL_FORMATS as BLOCK_TOOL_FORMATS
from concierge.models.chat_format import REASONING_MODES as REASONING_MODES
from concierge.models.chat_format import TOOL_FORMATS as TOOL_FORMATS
from concierge.models.chat_format import ChatFormat as ChatFormat
from concierge.models.chat_format import FormatError as FormatError

THINK_START = "<think>"
THINK_END = "</think>"

HERMES_START, HERMES_END = "<tool_call>", "</tool_call>"
DS_CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
DS_CALLS_END = "<｜tool▁calls▁end｜>"
DS_CALL_BEGIN = "<｜tool▁call▁begin｜>"
DS_CALL_END = "<｜tool▁call▁end｜>"
DS_SEP = "<｜tool▁sep｜>"
DS_EOS = "<｜end▁of▁sentence｜>"
KIMI_SECTION_BEGIN = "<|tool_calls_section_begin|>"
KIMI_SECTION_END = "<|tool_calls_section_end|>"
KIMI_CALL_BEGIN = "<|tool_call_begin|>"
KIMI_CALL_END = "<|tool_call_end|>"
KIMI_ARG_BEGIN = "<|tool_call_argument_begin|>"
MINIMAX_START, MINIMAX_END = "<tool_calls>", "</tool_calls>"
MINIMAX_M2_START, MINIMAX_M2_END = "<minimax:tool_call>", "</minimax:tool_call>"
PYTHON_TAG = "<|python_tag|>"

# (start, end) of the blocks that hold tool calls, per format.
_BLOCKS: dict[str, list[tuple[str, str]]] = {
    "hermes": [(HERMES_START, HERMES_END)],
    "qwen3-coder": [(HERMES_START, HERMES_END)],
    "glm": [(HERMES_START, HERMES_END)],
    "deepseek": [(DS_CALLS_BEGIN, DS_CALLS_END), (DS_CALL_BEGIN, DS_CALL_END)],
    "kimi": [(KIMI_SECTION_BEGIN, KIMI_SECTION_END), (KIMI_CALL_BEGIN, KIMI_CALL_END)],
    "minimax": [(MINIMAX_START, MINIMAX_END)],
    "minimax-m2": [(MINIMAX_M2_START, MINIMAX_M2_END)],
}
# Special tokens that carry no text when they turn up outside a block; dropped.
_STRAY: dict[str, list[str]] = {
    "deepseek": [DS_CALLS_END, DS_CALL_END, DS_EOS],
    "kimi": [KIMI_SECTION_END, KIMI_CALL_END],
}


def family_formats() -> dict[str, ChatFormat]:
    """Family name -> :class:`ChatFormat`, as registered (the built-ins in :mod:`concierge.models.plugin`)."""
    return {name: _registered(name) for name in plugins.entries("chat_formats")}


def _registered(family: str) -> ChatFormat | None:
    """The registered format of ``family`` (lower case), or None; a plugin's non-format is an error."""
    fmt = plugins.get("chat_formats", family)
    if fmt is None or isinstance(fmt, ChatFormat):
        return fmt
    plugin = plugins.entries("chat_formats")[family].plugin
    raise FormatError(f"chat format {family!r} from plugin {plugin} is a {type(fmt).__name__}, not a ChatFormat")


def __getattr__(name: str) -> Any:
    if name == "FAMILY_FORMATS":  # the old constant, now a view of the registry
        return family_formats()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve_format(family: str | ChatFormat) -> ChatFormat:
    """A :class:`ChatFormat` from itself, a family name, a tool-call format name or a catalogue id."""
    if isinstance(family, ChatFormat):
        return family
    key = family.strip().lower()
    registered = _registered(key)
    if registered is not None:
        return registered
    if key in _BLOCKS or key == "llama3-json":
        return ChatFormat("think-tags", key)
    if key in ("none", "harmony"):
        return ChatFormat(key, key)
    try:
        entry = find_entry(key)
    except Exception:  # noqa: BLE001 - a broken catalogue must not break parsing by family name
        entry = None
    if entry is not None:
        return entry.chat_format
    raise FormatError(
        f"unknown model family or format {family!r} (families: {', '.join(plugins.names('chat_formats'))})"
    )


def new_call_id() -> str:
    """An OpenAI-style tool call id."""
    return "call_" + uuid.uuid4().hex[:24]


# --------------------------------------------------------------------------- block bodies


def _json_args(value: Any) -> str:
    """Arguments as the JSON string OpenAI clients expect."""
    if isinstance(value, str):
        try:
            json.loads(value)
            return value
        except ValueError:
            return json.dumps(value, ensure_ascii=False)
    return json.dumps({} if value is None else value, ensure_ascii=False)


def _json_values(text: str) -> list[Any] | None:
    """Every JSON value in ``text`` (objects one after another, or separated by ``;``/newlines)."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    pos, text = 0, text.strip()
    while pos < len(text):
        while pos < len(text) and text[pos] in " \t\r\n;,":
            pos += 1
        if pos >= len(text):
            break
        try:
            value, pos = decoder.raw_decode(text, pos)
        except ValueError:
            return None
        values.append(value)
    return values


def _calls_from_json(text: str, *, require_args: bool = False) -> list[tuple[str, str]] | None:
    """Calls from JSON objects ``{"name", "arguments"|"parameters"}``; None if any object is not one.

    ``require_args``: for bare JSON (no surrounding tags) an object must also carry its
    arguments, so an ordinary JSON answer with a "name" field is not taken for a call.
    """
    values = _json_values(text)
    if not values:
        return None
    calls: list[tuple[str, str]] = []
    for value in values:
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, dict):
                return None
            if isinstance(item.get("function"), dict):  # OpenAI-shaped
                item = item["function"]
            name = item.get("name")
            if not isinstance(name, str) or not name:
                return None
            if require_args and "arguments" not in item and "parameters" not in item:
                return None
            args = item.get("arguments", item.get("parameters", {}))
            calls.append((name, _json_args(args)))
    return calls or None


def _coerce(value: str, schema_type: Any) -> Any:
    """A text value from an XML-ish format, typed by the tool's JSON schema when known."""
    if schema_type == "string" or (isinstance(schema_type, list) and schema_type == ["string"]):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _strip_one_newline(value: str) -> str:
    if value.startswith("\n"):
        value = value[1:]
    if value.endswith("\n"):
        value = value[:-1]
    return value


_QWEN_FUNCTION = re.compile(r"<function=([^>\n]+)>(.*?)(?:</function>|\Z)", re.S)
_QWEN_PARAM = re.compile(r"<parameter=([^>\n]+)>(.*?)(?:</parameter>|(?=<parameter=)|\Z)", re.S)
_GLM_PAIR = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)(?:</arg_value>|\Z)", re.S)
_GLM_NAME = re.compile(r"^[\w.\-:/]+$")
_M2_INVOKE = re.compile(r"<invoke\s+name=\"?([^\">]+)\"?\s*>(.*?)(?:</invoke>|\Z)", re.S)
_M2_PARAM = re.compile(r"<parameter\s+name=\"?([^\">]+)\"?\s*>(.*?)(?:</parameter>|\Z)", re.S)


class _Schemas:
    """Parameter types per tool name, from the request's ``tools``."""

    def __init__(self, tools: Iterable[Mapping[str, Any]] | None) -> None:
        self.types: dict[str, dict[str, Any]] = {}
        for tool in tools or ():
            function = tool.get("function") if isinstance(tool, Mapping) else None
            if isinstance(function, Mapping) and isinstance(function.get("name"), str):
                props = (function.get("parameters") or {}).get("properties") or {}
                self.types[function["name"]] = {
                    k: v.get("type") for k, v in props.items() if isinstance(v, Mapping)
                }

    def args(self, name: str, pairs: Iterable[tuple[str, str]]) -> str:
        types = self.types.get(name, {})
        out = {
            key.strip(): _coerce(_strip_one_newline(value), types.get(key.strip())) for key, value in pairs
        }
        return json.dumps(out, ensure_ascii=False)


def _parse_tool_call_body(body: str, schemas: _Schemas) -> list[tuple[str, str]] | None:
    """The body of a ``<tool_call>`` block: JSON, Qwen3-Coder XML or GLM key/value pairs."""
    text = body.strip()
    if not text:
        return None
    if text[0] in "{[":
        return _calls_from_json(text)
    if "<function=" in text:
        calls = [
            (name.strip(), schemas.args(name.strip(), _QWEN_PARAM.findall(inner)))
            for name, inner in _QWEN_FUNCTION.findall(text)
        ]
        return calls or None
    name, _, rest = text.partition("<arg_key>")
    name = name.strip()
    if not _GLM_NAME.match(name):
        return None
    pairs = _GLM_PAIR.findall("<arg_key>" + rest) if rest else []
    return [(name, schemas.args(name, pairs))]


def _parse_deepseek_call(call: str) -> tuple[str, str] | None:
    if DS_SEP not in call:
        return None
    left, right = call.split(DS_SEP, 1)
    left = left.strip()
    if left == "function":  # V3 / R1: NAME\n```json\n{...}\n```
        name, _, rest = right.partition("\n")
        rest = rest.strip()
        fence = re.match(r"^```(?:json)?\s*(.*?)\s*(?:```)?\s*$", rest, re.S)
        args = fence.group(1) if fence else rest
    else:  # V3.1: NAME<sep>{json}
        name, args = left, right.strip()
    name = name.strip()
    if not name:
        return None
    try:
        return name, _json_args(json.loads(args) if args else {})
    except ValueError:
        return None


def _split_calls(body: str, begin: str, end: str) -> list[str]:
    if begin not in body:
        return [body]
    parts = body.split(begin)[1:]
    return [part.split(end, 1)[0] for part in parts]


def _parse_kimi_call(call: str) -> tuple[str, str] | None:
    header, sep, args = call.partition(KIMI_ARG_BEGIN)
    if not sep:
        return None
    name = header.strip()
    name = re.sub(r":\d+$", "", name)
    if name.startswith("functions."):
        name = name[len("functions.") :]
    if not name:
        return None
    try:
        return name, _json_args(json.loads(args.strip()) if args.strip() else {})
    except ValueError:
        return None


def _parse_block(tool_format: str, start: str, body: str, schemas: _Schemas) -> list[tuple[str, str]] | None:
    """Tool calls in one block, or None when the body does not parse (it is then kept as text)."""
    if start == HERMES_START:
        return _parse_tool_call_body(body, schemas)
    if start in (DS_CALLS_BEGIN, DS_CALL_BEGIN):
        raw = _split_calls(body, DS_CALL_BEGIN, DS_CALL_END)
        calls = [_parse_deepseek_call(c) for c in raw if c.strip()]
        return calls if calls and all(c is not None for c in calls) else None  # type: ignore[return-value]
    if start in (KIMI_SECTION_BEGIN, KIMI_CALL_BEGIN):
        raw = _split_calls(body, KIMI_CALL_BEGIN, KIMI_CALL_END)
        calls = [_parse_kimi_call(c) for c in raw if c.strip()]
        return calls if calls and all(c is not None for c in calls) else None  # type: ignore[return-value]
    if start == MINIMAX_START:
        return _calls_from_json(body)
    if start == MINIMAX_M2_START:
        calls = [
            (name.strip(), schemas.args(name.strip(), _M2_PARAM.findall(inner)))
            for name, inner in _M2_INVOKE.findall(body)
        ]
        return calls or None
    return None


def _parse_llama_json(text: str) -> list[tuple[str, str]] | None:
    text = text.strip()
    if text.startswith(PYTHON_TAG):
        text = text[len(PYTHON_TAG) :]
    return _calls_from_json(text, require_args=True)


# --------------------------------------------------------------------------- streaming

_CONTENT, _REASONING, _TOOL, _JSON = "content", "reasoning", "tool", "json"


def _partial_suffix(text: str, tags: Iterable[str]) -> int:
    """Length of the longest end of ``text`` that could be the start of one of ``tags``."""
    best = 0
    for tag in tags:
        for k in range(min(len(tag) - 1, len(text)), best, -1):
            if text.endswith(tag[:k]):
                best = k
                break
    return best


class StreamParser:
    """Turns a model's raw content deltas into ``reasoning_content`` / ``content`` / ``tool_calls`` deltas.

    ``feed(text)`` returns the deltas that are certain so far (text that may be the start of
    a tag is held back); ``finish()`` flushes the rest. Tool calls come out when their block
    closes, as two deltas per call: ``{index, id, type, function: {name, arguments: ""}}``
    then ``{index, function: {arguments}}``. Whitespace just inside a reasoning block, and
    around tags, is dropped; text without tags passes through unchanged.
    """

    def __init__(
        self,
        family: str | ChatFormat,
        *,
        tools: Iterable[Mapping[str, Any]] | None = None,
        prefilled: bool | None = None,
    ) -> None:
        self.format = resolve_format(family)
        self._think = self.format.reasoning in ("think-tags", "think-prefilled")
        if prefilled is None:
            prefilled = self.format.reasoning == "think-prefilled"
        self._blocks = _BLOCKS.get(self.format.tool_calls, [])
        self._stray = _STRAY.get(self.format.tool_calls, [])
        self._schemas = _Schemas(tools)
        self._state = _REASONING if (prefilled and self._think) else _CONTENT
        self._buf = ""
        self._block: tuple[str, str] | None = None
        self._block_text = ""
        self._ws_before_block = ""
        self._json_text = ""
        self._json_possible = self.format.tool_calls == "llama3-json"
        self._content_ws = ""  # trailing whitespace of content, sent once non-space text follows
        self._content_lstrip = False
        self._reasoning_ws = ""
        self._reasoning_lstrip = True
        self._finished = False
        self.tool_calls: list[dict[str, Any]] = []  # every call emitted, in order

    # -- public API
    def feed(self, text: str) -> list[dict[str, Any]]:
        if self._finished:
            raise RuntimeError("StreamParser.feed() after finish()")
        if not text:
            return []
        self._buf += text
        out: list[dict[str, Any]] = []
        self._process(out, final=False)
        return out

    def finish(self) -> list[dict[str, Any]]:
        if self._finished:
            return []
        out: list[dict[str, Any]] = []
        self._process(out, final=True)
        self._finished = True
        return out

    # -- state machine
    def _tags(self) -> list[tuple[str, str]]:
        """(tag, action) pairs that matter in the current state."""
        if self._state == _REASONING:
            return [(THINK_END, "end_think"), (THINK_START, "drop")]
        tags: list[tuple[str, str]] = []
        if self._think:
            tags += [(THINK_START, "start_think"), (THINK_END, "drop")]
        tags += [(start, "block") for start, _ in self._blocks]
        tags += [(tag, "drop") for tag in self._stray]
        return tags

    def _process(self, out: list[dict[str, Any]], *, final: bool) -> None:
        while True:
            if self._state == _TOOL:
                if not self._step_block(out, final=final):
                    return
                continue
            if self._state == _JSON:
                self._json_text += self._buf
                self._buf = ""
                if final:
                    self._finish_json(out)
                return
            if self._json_possible and self._state == _CONTENT:
                probe = self._buf.lstrip()
                if probe.startswith(("{", "[", PYTHON_TAG)):
                    self._state, self._json_text, self._buf = _JSON, self._buf, ""
                    continue
                if probe and not (PYTHON_TAG.startswith(probe) and not final):
                    self._json_possible = False
                elif not final:
                    return  # only whitespace or a partial <|python_tag|> so far
            tags = self._tags()
            found: tuple[int, str, str] | None = None
            for tag, action in tags:
                i = self._buf.find(tag)
                if i >= 0 and (found is None or i < found[0] or (i == found[0] and len(tag) > len(found[1]))):
                    found = (i, tag, action)
            if found is None:
                keep = 0 if final else _partial_suffix(self._buf, [t for t, _ in tags])
                cut = len(self._buf) - keep
                self._emit_text(out, self._buf[:cut])
                self._buf = self._buf[cut:]
                if final:
                    self._flush_ws(out)
                return
            i, tag, action = found
            self._emit_text(out, self._buf[:i])
            self._buf = self._buf[i + len(tag) :]
            self._json_possible = False
            self._apply(action, tag)

    def _apply(self, action: str, tag: str) -> None:
        if action == "start_think":
            self._content_ws = ""
            self._state, self._reasoning_lstrip, self._reasoning_ws = _REASONING, True, ""
        elif action == "end_think":
            self._reasoning_ws = ""
            self._state, self._content_lstrip = _CONTENT, True
        elif action == "block":
            # Whitespace before a tool call is noise, unless the block turns out not to parse.
            self._ws_before_block, self._content_ws = self._content_ws, ""
            end = next(e for s, e in self._blocks if s == tag)
            self._state, self._block, self._block_text = _TOOL, (tag, end), ""

    def _step_block(self, out: list[dict[str, Any]], *, final: bool) -> bool:
        """Advance inside a tool-call block; False when more input is needed."""
        assert self._block is not None
        start, end = self._block
        i = self._buf.find(end)
        if i < 0:
            if not final:
                keep = _partial_suffix(self._buf, [end])
                cut = len(self._buf) - keep
                self._block_text += self._buf[:cut]
                self._buf = self._buf[cut:]
                return False
            self._block_text += self._buf
            self._buf = ""
            closed = False
        else:
            self._block_text += self._buf[:i]
            self._buf = self._buf[i + len(end) :]
            closed = True
        calls = _parse_block(self.format.tool_calls, start, self._block_text, self._schemas)
        self._state, self._block = _CONTENT, None
        if calls:
            for name, arguments in calls:
                self._emit_call(out, name, arguments)
            self._content_lstrip = True
        else:  # not a tool call after all: keep the text as the model wrote it
            raw = start + self._block_text + (end if closed else "")
            self._content_ws, self._content_lstrip = self._ws_before_block, False
            self._emit_text(out, raw)
        self._block_text = ""
        return True

    def _finish_json(self, out: list[dict[str, Any]]) -> None:
        calls = _parse_llama_json(self._json_text)
        self._state = _CONTENT
        if calls:
            for name, arguments in calls:
                self._emit_call(out, name, arguments)
        else:
            self._emit_text(out, self._json_text)
            self._flush_ws(out)
        self._json_text = ""

    def _emit_call(self, out: list[dict[str, Any]], name: str, arguments: str) -> None:
        index = len(self.tool_calls)
        call = {
            "index": index,
            "id": new_call_id(),
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        self.tool_calls.append(
            {"id": call["id"], "type": "function", "function": {"name": name, "arguments": arguments}}
        )
        out.append({"tool_calls": [call]})
        out.append({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})

    def _emit_text(self, out: list[dict[str, Any]], text: str) -> None:
        if not text:
            return
        if self._state == _REASONING:
            if self._reasoning_lstrip:
                text = text.lstrip()
                if not text:
                    return
                self._reasoning_lstrip = False
            combined = self._reasoning_ws + text
            body = combined.rstrip()
            self._reasoning_ws = combined[len(body) :]
            if body:
                _append(out, "reasoning_content", body)
            return
        if self._content_lstrip:
            text = text.lstrip()
            if not text:
                return
            self._content_lstrip = False
        combined = self._content_ws + text
        body = combined.rstrip()
        self._content_ws = combined[len(body) :]
        if body:
            _append(out, "content", body)

    def _flush_ws(self, out: list[dict[str, Any]]) -> None:
        # Trailing whitespace at the very end of content belongs to the text (passthrough);
        # at the end of an unclosed reasoning block it is noise.
        if self._state == _CONTENT and self._content_ws:
            _append(out, "content", self._content_ws)
        self._content_ws = self._reasoning_ws = ""


def _append(out: list[dict[str, Any]], key: str, text: str) -> None:
    if out and set(out[-1]) == {key}:
        out[-1][key] += text
    else:
        out.append({key: text})


# --------------------------------------------------------------------------- whole messages


def merge_deltas(deltas: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Fold stream deltas into one assistant message (content None when only tool calls)."""
    content: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    for delta in deltas:
        if delta.get("content"):
            content.append(delta["content"])
        if delta.get("reasoning_content"):
            reasoning.append(delta["reasoning_content"])
        for call in delta.get("tool_calls") or ():
            slot = calls.setdefault(
                call["index"], {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
            )
            if call.get("id"):
                slot["id"] = call["id"]
            function = call.get("function") or {}
            slot["function"]["name"] += function.get("name") or ""
            slot["function"]["arguments"] += function.get("arguments") or ""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content)}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
        if not message["content"].strip():
            message["content"] = None
    return message


def prompt_prefilled(prompt: str | None) -> bool | None:
    """Whether a rendered prompt leaves the model inside a reasoning block (None: it does not say).

    A chat template that ends the assistant opener with ``<think>`` (Qwen3 Thinking-2507,
    DeepSeek-R1) makes output start inside the block, with only ``</think>`` in it; one that ends
    with an empty ``<think>\n\n</think>`` (thinking switched off by ``enable_thinking: false``,
    a ``reasoning_effort``, a ``/no_think``-style tag: vLLM #53284) means the output is all answer,
    whatever the family usually does. Only the prompt's end counts, not think blocks in history.
    """
    if not prompt:
        return None
    tail = prompt.rstrip()
    if tail.endswith(THINK_START):
        return True
    if tail.endswith(THINK_END):
        return False
    return None


def request_prefilled(request: Mapping[str, Any] | None) -> bool | None:
    """False when the request switches thinking off through the chat template; else None (unknown).

    ``chat_template_kwargs`` ``enable_thinking: false`` (Qwen3), ``thinking: false`` (DeepSeek V3.1)
    or ``reasoning_effort: none`` make templates close the think block in the prompt themselves.
    """
    kwargs = (request or {}).get("chat_template_kwargs")
    if not isinstance(kwargs, Mapping):
        return None
    if kwargs.get("enable_thinking") is False or kwargs.get("thinking") is False:
        return False
    if kwargs.get("reasoning_effort") == "none":
        return False
    return None


def parse_message(
    text: str,
    family: str | ChatFormat,
    *,
    tools: Iterable[Mapping[str, Any]] | None = None,
    prefilled: bool | None = None,
) -> dict[str, Any]:
    """An OpenAI assistant message (``content``, maybe ``reasoning_content`` and ``tool_calls``) from raw text.

    ``prefilled``: whether the prompt left the model inside a reasoning block (see
    :func:`prompt_prefilled`); None: the family's default, and for ``think-tags`` families a
    ``</think>`` with no opening tag before it means the template opened the block.
    """
    fmt = resolve_format(family)
    if prefilled is None and fmt.reasoning == "think-tags":
        end = text.find(THINK_END)
        if end >= 0 and THINK_START not in text[:end]:
            prefilled = True  # DeepSeek-R1 style: the template opened the block, only the end is in the text
    parser = StreamParser(fmt, tools=tools, prefilled=prefilled)
    return merge_deltas(parser.feed(text) + parser.finish())


def has_raw_tags(text: str, family: str | ChatFormat) -> bool:
    """Whether ``text`` contains markup that :func:`parse_message` would turn into fields."""
    fmt = resolve_format(family)
    if fmt.reasoning in ("think-tags", "think-prefilled") and (THINK_START in text or THINK_END in text):
        return True
    if any(start in text for start, _ in _BLOCKS.get(fmt.tool_calls, [])):
        return True
    if fmt.tool_calls == "llama3-json":
        return _parse_llama_json(text) is not None
    return False
