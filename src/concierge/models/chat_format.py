"""What a model family's raw output looks like: :class:`ChatFormat` (reasoning mode + tool-call format).

A small module of its own so that the catalogue (which describes each entry's format) and the
parsers in :mod:`concierge.models.formats` (which resolve family names to formats, partly through
the catalogue) both import it, instead of each other. Family names map to formats through the
plugin registry (``register_chat_formats``); the built-in families are in
:mod:`concierge.models.plugin`.
"""

from __future__ import annotations

from dataclasses import dataclass

REASONING_MODES = ("none", "think-tags", "think-prefilled", "harmony")
TOOL_FORMATS = (
    "none",
    "hermes",
    "qwen3-coder",
    "glm",
    "deepseek",
    "kimi",
    "minimax",
    "minimax-m2",
    "llama3-json",
    "harmony",
)
# Tool-call formats whose calls sit in tagged blocks (the parsers in formats.py handle each).
BLOCK_TOOL_FORMATS = ("hermes", "qwen3-coder", "glm", "deepseek", "kimi", "minimax", "minimax-m2")


class FormatError(ValueError):
    """An unknown family or format name."""


@dataclass(frozen=True)
class ChatFormat:
    """How a model family writes reasoning and tool calls in its raw output."""

    reasoning: str = "none"
    tool_calls: str = "none"
    notes: str = ""

    def __post_init__(self) -> None:
        if self.reasoning not in REASONING_MODES:
            raise FormatError(
                f"unknown reasoning mode {self.reasoning!r} (one of {', '.join(REASONING_MODES)})"
            )
        if self.tool_calls not in TOOL_FORMATS:
            raise FormatError(
                f"unknown tool-call format {self.tool_calls!r} (one of {', '.join(TOOL_FORMATS)})"
            )

    @property
    def parseable(self) -> bool:
        """Whether :mod:`concierge.models.formats` has anything to extract for the format."""
        return (
            self.reasoning in ("think-tags", "think-prefilled")
            or self.tool_calls in BLOCK_TOOL_FORMATS
            or self.tool_calls == "llama3-json"
        )
