"""`bench report`: a paper's tables and figures from run records alone. `write` reads the
records and writes the report folder (`make_report`, and `study_plan` for `--plan`); the other
modules are its sections: `setup`, `downstream` (Table 1), `efficiency` (Table 2), `provenance`
(Table 3), `verdicts` (the claims, DAPT against the start, the power plan), `probe` (the
probe's choice of C), `figures`, and `format` (number formats). Imports the study statistics
(bench/verdicts.py, plan.py, collect.py, cell_stats.py) and the library; only the command line
and `bench study` import it."""
