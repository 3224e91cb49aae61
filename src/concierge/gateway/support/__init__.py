"""concierge.gateway.support"""
