"""The scripts here are benchmarks run by ``make bench`` (``tests/bench/run.py``), not tests:
pytest collects none of them."""

collect_ignore_glob = ["*.py"]
