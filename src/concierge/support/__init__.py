"""concierge.support"""
