"""`bench perf`: a fixed micro-suite of the harness's own speed, overhead and savings."""
