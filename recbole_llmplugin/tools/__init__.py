"""Runnable tools: ``python -m recbole_llmplugin.tools.benchmark | bench | learning_curve``."""
