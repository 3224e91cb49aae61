"""concierge.gateway.models"""
