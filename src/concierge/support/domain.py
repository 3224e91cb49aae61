"""Moved: the toolkit is :mod:`concierge.support.toolkit`, the domain registry :mod:`concierge.support.domains`.

Kept only for callers outside the support package that still import from here
(``support/session.py``, ``gateway/routes_support.py``, ``evals/report.py``, ``commands/report.py``);
delete it once they import from the new places.
"""

from __future__ import annotations

from concierge.support.domains import domain_names, load_domain, resolve_data_dir
from concierge.support.toolkit import DbSource

__all__ = ["DbSource", "domain_names", "load_domain", "resolve_data_dir"]
