"""concierge.gateway.tokenize"""
