"""Downstream (fine-tuning) tasks: generic readers for task files and their metrics."""
