"""Scoring with a language model: per-word surprisal (surprisal.py), its fit to human reading times
(reading_times.py), and run_surprisal.py's code (score.py)."""
