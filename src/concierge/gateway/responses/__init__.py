"""concierge.gateway.responses"""
