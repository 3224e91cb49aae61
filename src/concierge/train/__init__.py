"""concierge.train"""
