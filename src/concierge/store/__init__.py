"""concierge.store"""
