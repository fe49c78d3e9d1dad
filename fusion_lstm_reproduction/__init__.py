"""Reproducing the paper: experiments as data and their runner (experiments.py), the probes' prefix similarity
(similarity.py), and the tables and figures generated from the results (report.py, tables.py)."""
