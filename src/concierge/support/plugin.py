"""The built-in support domains, registered through the plugin door like any company's own."""

from __future__ import annotations

from concierge.plugins import Register, hookimpl


@hookimpl
def register_domains(register: Register) -> None:
    register("retail", "concierge.support.domains.retail:load")
    register("airline", "concierge.support.domains.airline:load")
    register("homestay", "concierge.support.domains.homestay:load")
