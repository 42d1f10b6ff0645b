"""Utilities: RecBole compatibility fixes, errors, file helpers, checkpoint files, processes of a data-parallel run,
resource figures and the model registry."""
