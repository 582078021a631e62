"""Freezing: `allocation` holds the rules that decide how many and which transformer blocks
each client freezes (the paper's allocation by data share, and the policies beyond it),
`policies` the freeze policies and schedules that apply them to a model, per client and round.
May import the model's block discovery, adapters and config; the round (fl/) imports it."""
