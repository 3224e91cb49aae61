"""concierge.gateway.health"""
