"""Moved to :mod:`concierge.support.domains.homestay`.

Kept only for ``evals/report.py``, which still imports ``TASKS_PATH`` from here; delete it once
that import reads ``from concierge.support.domains.homestay import TASKS_PATH``.
"""

from __future__ import annotations

from concierge.support.domains.homestay import TASKS_PATH

__all__ = ["TASKS_PATH"]
