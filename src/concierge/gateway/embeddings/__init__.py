"""concierge.gateway.embeddings"""
