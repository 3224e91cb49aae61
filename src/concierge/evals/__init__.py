"""concierge.evals"""
