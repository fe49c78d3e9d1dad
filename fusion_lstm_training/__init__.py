"""Training a fusion LM: run_clm.py's code (clm.py), data, the prefix-embedding cache (embeddings.py), vector
sources, metrics, callbacks, the BPE, and the slow references of the paper's forward pass (reference.py)."""
