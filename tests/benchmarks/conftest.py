# Benchmarks are scripts (python tests/benchmarks/bench_*.py), not tests.
collect_ignore_glob = ["bench_*.py", "_bench*.py"]
