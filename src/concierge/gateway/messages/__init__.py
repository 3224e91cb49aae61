"""concierge.gateway.messages"""
