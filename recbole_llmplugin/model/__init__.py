"""Models: the abstract LLM recommender, the LLM recommenders and their layers."""
