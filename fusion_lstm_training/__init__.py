"""Training support for run_clm.py: data, prefix-embedding precompute, metrics, callbacks."""
