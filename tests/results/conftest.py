"""The scripts here regenerate the results table (``make results``), not tests: pytest
collects none of them (their test is tests/test_results_runner.py)."""

collect_ignore_glob = ["*.py"]
