"""concierge.gateway.chat"""
