"""What training, surprisal scoring and the reproduction all read, below all three: data files (`files`), the
documents contract (`documents`: sentence and document ends, the previous sentences), batches of token ids and e_j
(`batches`: padding, the collator) and the prefix embeddings of a model's own encoder (`embedder`)."""
