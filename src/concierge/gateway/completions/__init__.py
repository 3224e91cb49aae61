"""concierge.gateway.completions"""
