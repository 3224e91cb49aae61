"""concierge.shop"""
