"""How qup runs reach Dagster: the run launcher, the daemon, staleness and the runs `qup run` launches.

The one Dagster-aware place for orchestration: `cli.py` parses arguments and prints, the asset layer
computes, and every run (from `qup run` or the UI) goes through the instance's queue and run launcher.
"""
