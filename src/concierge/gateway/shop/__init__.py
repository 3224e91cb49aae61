"""concierge.gateway.shop"""
