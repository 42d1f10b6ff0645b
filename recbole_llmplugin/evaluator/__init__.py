"""Evaluation: standard errors beside RecBole's metrics."""
