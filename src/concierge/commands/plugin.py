"""Built-in plugin (hooks filled in as their registries move to concierge.plugins)."""

from __future__ import annotations
