"""concierge.web"""
