"""Utilities: RecBole compatibility fixes, errors, file helpers, resource figures and the model registry."""
