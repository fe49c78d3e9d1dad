"""How prefix embeddings change along a sentence (the paper's figure): the cosine similarity of e_j to e_{j-1} and to
the last prefix's embedding (the whole sentence), as a function of the prefix length, over the validation set. The
vectors come from the embedding cache that training filled, so nothing is embedded twice."""

import logging
from collections import defaultdict

import numpy as np
import torch
from transformers import AutoTokenizer

import modeling_fusion_lstm
from modeling_fusion_lstm.prefix_encoder_fusion_lstm import FusionLSTMPrefixEncoder

from fusion_lstm_data.embedder import PrefixEmbedder
from fusion_lstm_training.data import load_splits, tokenize_sentences
from fusion_lstm_training.embeddings import EmbeddingCache



logger = logging.getLogger(__name__)


def cosine_curves(sentences) -> dict[int, dict]:
    """sentences: (seq_len, width) arrays of e_0 … e_{n-1}. Returns, per prefix length j + 1 (tokens 0..j), the
    mean cosine similarity of e_j to e_{j-1} ("previous", from length 2) and to e_{n-1} ("last", lengths 1..n-1)
    and how many prefixes each mean is over."""
    sums = defaultdict(lambda: {"previous": [0.0, 0], "last": [0.0, 0]})
    for vectors in sentences:
        vectors = np.asarray(vectors, dtype=np.float64)
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        previous = (unit[1:] * unit[:-1]).sum(1)  # position j = 1 … n-1
        last = unit[:-1] @ unit[-1]  # position j = 0 … n-2
        for j, value in enumerate(previous, start=2):
            sums[j]["previous"][0] += value
            sums[j]["previous"][1] += 1
        for j, value in enumerate(last, start=1):
            sums[j]["last"][0] += value
            sums[j]["last"][1] += 1
    curves = {}
    for length in sorted(sums):
        entry = {}
        for name, (total, count) in sums[length].items():
            if count:
                entry[name], entry[f"{name}_count"] = total / count, count
        curves[length] = entry
    return curves


def prefix_similarity(validation_file: str, tokenizer_name: str | None = None, encoder_name_or_path: str | None = None,
                      encoder_pooling: str = "cls", max_eval_samples: int | None = None, max_seq_length: int = 128,
                      bf16: bool = False, embedding_cache_dir: str | None = None) -> dict:
    """The cosine curves of e_j over the sentences of `validation_file`, embedded as run_clm.py embeds them (same
    LM tokenizer, encoder, pooling and precision, hence the same cache)."""
    encoder_path = encoder_name_or_path or modeling_fusion_lstm.default_encoder_path()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_name) if tokenizer_name else \
        modeling_fusion_lstm.load_tokenizer(encoder_path)
    prefix_encoder = FusionLSTMPrefixEncoder.from_encoder_pretrained(
        encoder_path, encoder_pooling=encoder_pooling, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    encoder_tokenizer = None
    if not prefix_encoder.config.encoder_reads_lm_ids:
        encoder_tokenizer = AutoTokenizer.from_pretrained(encoder_path)
    sentences = load_splits(validation_file=validation_file, max_eval_samples=max_eval_samples)["validation"]
    tokenized = tokenize_sentences(sentences, tokenizer, max_seq_length, "validation", encoder_tokenizer is not None)
    embedder = PrefixEmbedder(prefix_encoder, tokenizer, encoder_tokenizer, torch.bfloat16 if bf16 else None)
    data = EmbeddingCache(embedder, embedding_cache_dir).attach(tokenized, "validation")
    curves = cosine_curves(row["fusion_embeds"] for row in data.select_columns(["fusion_embeds"]))
    logger.info("cosine similarity of %d sentences' prefix embeddings (%s pooling)", len(data), encoder_pooling)
    return {"sentences": len(data), "encoder_pooling": encoder_pooling,
            "curves": {str(length): entry for length, entry in curves.items()}}


def similarity_rows(results: list[dict]) -> list[tuple[str, ...]]:
    """The mean cosine similarity at a few prefix lengths, per pooling, as table rows (the first is the header)."""
    lengths = ("2", "5", "10", "20", "40")
    rows = [("pooling", "sentences", *(f"prev @{n}" for n in lengths), *(f"last @{n}" for n in lengths))]
    for r in results:
        curves = r.metrics["curves"]
        cell = lambda n, key: f"{curves[n][key]:.3f}" if n in curves and key in curves[n] else "—"  # noqa: E731
        rows.append((r.metrics["encoder_pooling"], str(r.metrics["sentences"]),
                     *(cell(n, "previous") for n in lengths), *(cell(n, "last") for n in lengths)))
    return rows
