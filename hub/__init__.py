"""Sharing on the Hub: the model card, and a local Hub-compatible server for offline use and tests."""
