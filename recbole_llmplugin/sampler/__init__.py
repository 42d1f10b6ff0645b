"""Samplers: the fixed evaluation candidates every model ranks."""
