"""Trainers: the staged trainer, checkpoints, locks and multi-process training."""
