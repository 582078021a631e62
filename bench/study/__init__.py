"""`bench study`'s workflow (`flow`): the head warm-up, every cell trained then scored
downstream, the report, and `--plan`; and what a study's records say (`records`): whether a
record is scored on the study's tasks, the test sizes a plan rescales to, the compute the
records hold. Imports the report (bench/report/) and the library; nothing imports it but the
command line."""
