"""The built-in support domains, registered through the plugin door like any company's own."""

from __future__ import annotations

import os

from concierge.plugins import Register, hookimpl


@hookimpl
def register_domains(register: Register) -> None:
    register("retail", "concierge.support.domains.retail:load")
    register("airline", "concierge.support.domains.airline:load")
    register("homestay", "concierge.support.domains.homestay:load")
    if os.environ.get("CONCIERGE_DOMAINS"):  # domain folders by path (support.domains.external)
        from concierge.support.domains.external import env_folders

        for name, loader in env_folders().items():
            register(name, loader)
