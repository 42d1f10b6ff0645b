"""Trainers: the LLM and staged trainers (they name and keep the stage checkpoints), and the locks of a stage."""
