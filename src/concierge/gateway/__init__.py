"""concierge.gateway"""
