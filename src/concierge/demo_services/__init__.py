"""Stand-ins for a company's own systems, run as separate processes: the home-stay booking service
over HTTP with its OpenAPI document (:mod:`.homestay_api`) and as an MCP server (:mod:`.homestay_mcp`).

concierge reaches them only through configuration (the domain folders under ``domains/``), the way
it reaches a real company's systems; ``concierge demo`` starts the HTTP service as a subprocess.
"""
