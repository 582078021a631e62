"""Measurement: FLOPs that see freezing, phase timers, memory peaks, accelerator peak."""
