"""Emergify recommender: the serving layer (in-memory catalog index, ranking, read API)."""
