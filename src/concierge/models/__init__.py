"""concierge.models"""
