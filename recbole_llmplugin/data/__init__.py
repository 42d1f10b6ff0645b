"""Data: dataset file checks, item text, prompts and the Amazon converter."""
