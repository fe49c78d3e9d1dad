"""Prefix embeddings e_j precomputed once, stored as float16 in a memory-mapped Arrow cache.

The cache is keyed by a fingerprint of everything that changes the vectors: the encoder's weights and config, the
pooling, the fusion context, the tokenizers and the token ids of the data. Under several processes each rank
embeds its own contiguous shard, the shards are joined once into one cache file, and every rank memory-maps it.
"""

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
from accelerate import PartialState
from datasets import Array2D, Dataset, Features, concatenate_datasets

from .data import pad_right


logger = logging.getLogger(__name__)
SENTENCES_PER_MAP_BATCH = 64


def encoder_fingerprint(model, lm_tokenizer, encoder_tokenizer, precision: str = "fp32") -> str:
    """Hash of what turns token ids into vectors: the encoder (weights + config), pooling, context, truncation,
    precision and the tokenizers. Computed once per run (hashing the weights reads them all)."""
    config = model.config
    digest = hashlib.sha256(precision.encode())
    digest.update(json.dumps(config.encoder.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.model.prefix_encoder.encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    digest.update(f"{config.encoder_pooling}|{config.fusion_context}|{model.model.prefix_encoder.max_length}".encode())
    for tokenizer in (lm_tokenizer, encoder_tokenizer):
        if tokenizer is not None:
            digest.update(tokenizer.backend_tokenizer.to_str().encode())
    return digest.hexdigest()


def embedding_fingerprint(encoder_key: str, dataset: Dataset) -> str:
    """The cache key of one split: `encoder_fingerprint(...)` plus the data's token ids (and text, for
    embeddings computed from text)."""
    digest = hashlib.sha256(encoder_key.encode())
    ids = dataset.data.column("input_ids")
    digest.update(pc.list_value_length(ids).to_numpy(zero_copy_only=False).tobytes())
    digest.update(pc.list_flatten(ids).to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
    if "offsets" in dataset.column_names:
        digest.update("\n".join(dataset["text"]).encode())
    return digest.hexdigest()[:32]


def prefix_encoder_tokens(lengths) -> int:
    """Encoder tokens needed for all prefixes of sentences of these lengths: prefix k has k tokens + [SEP]."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return int((lengths * (lengths + 1) // 2 + lengths).sum())


def default_cache_dir() -> Path:
    from datasets import config as datasets_config

    return Path(datasets_config.HF_DATASETS_CACHE) / "fusion_lstm_embeddings"


class PrefixEmbedder:
    """Computes e_j for batches of tokenized sentences with the model's own prefix encoder.

    With the encoder's vocabulary (the default) the encoder reads the LM's token ids, exactly as inside the model.
    With another LM tokenizer (e.g. a trained BPE), e_j embeds the text of the sentence up to the end of token j
    (`offsets`), tokenized by the encoder's tokenizer.
    """

    def __init__(self, model, encoder_tokenizer=None, autocast_dtype: torch.dtype | None = None):
        self.prefix_encoder = model.model.prefix_encoder
        self.config = model.config
        self.encoder_tokenizer = encoder_tokenizer
        self.autocast_dtype = autocast_dtype  # e.g. bfloat16: about twice as fast on CPUs with AVX512-BF16

    @property
    def precision(self) -> str:
        return "fp32" if self.autocast_dtype is None else str(self.autocast_dtype).replace("torch.", "")

    @torch.inference_mode()
    def __call__(self, batch: dict) -> dict:
        device = next(self.prefix_encoder.parameters()).device
        with torch.autocast(device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            if self.encoder_tokenizer is None:
                vectors = self._from_token_ids(batch["input_ids"], device)
            else:
                vectors = self._from_text(batch["text"], batch["offsets"], device)
        return {"fusion_embeds": [v.to(torch.float16).cpu().numpy() for v in vectors]}

    def _from_token_ids(self, input_ids: list[list[int]], device) -> list[torch.Tensor]:
        padded, mask = pad_right(input_ids, pad_id=0)
        out = self.prefix_encoder(padded.to(device), mask.to(device), num_new=padded.shape[1])
        return [out[i, : len(ids)] for i, ids in enumerate(input_ids)]

    def _from_text(self, texts: list[str], offsets: list[list[int]], device) -> list[torch.Tensor]:
        if self.config.fusion_context == "sentence":
            prefixes = [[text] * len(ends) for text, ends in zip(texts, offsets)]
        else:
            prefixes = [[text[:end] for end in ends] for text, ends in zip(texts, offsets)]
        flat = [p for rows in prefixes for p in rows]
        # [CLS] + the prefix's tokens; embed_rows appends [SEP] and keeps the most recent tokens when too long
        encoded = self.encoder_tokenizer(flat, add_special_tokens=False)["input_ids"]
        start = self.encoder_tokenizer.cls_token_id
        matrix, mask = pad_right([[start] + ids for ids in encoded], pad_id=0)
        lengths = mask.sum(1)
        pooled = self.prefix_encoder.embed_rows(
            matrix.to(device), torch.arange(len(matrix), device=device), lengths.to(device),
            end_token_id=self.encoder_tokenizer.sep_token_id,
        )
        return list(pooled.split([len(rows) for rows in prefixes]))


def add_fusion_embeddings(dataset: Dataset, embedder: PrefixEmbedder, fingerprint: str, cache_dir: Path,
                          split: str) -> Dataset:
    """`dataset` with a `fusion_embeds` column (seq_len, width) in float16, from the cache when it exists."""
    state = PartialState()
    cache_dir = Path(cache_dir)
    final = cache_dir / f"{fingerprint}.arrow"
    if final.exists():
        logger.info("%s: reusing cached embeddings %s", split, final)
        return _attach(dataset, Dataset.from_file(str(final)), final)
    cache_dir.mkdir(parents=True, exist_ok=True)
    width = embedder.config.fusion_embedding_size
    features = Features({"fusion_embeds": Array2D(shape=(None, width), dtype="float16")})
    world, rank = state.num_processes, state.process_index
    shard_files = [cache_dir / f"{fingerprint}.shard{i}of{world}.arrow" for i in range(world)]
    shard = dataset.shard(num_shards=world, index=rank, contiguous=True)
    logger.info("%s: rank %d/%d embeds the prefixes of %d sentences", split, rank, world, len(shard))
    started = time.perf_counter()
    shard.map(
        embedder,
        batched=True,
        batch_size=SENTENCES_PER_MAP_BATCH,
        remove_columns=shard.column_names,
        features=features,
        cache_file_name=str(shard_files[rank]),
        new_fingerprint=f"{fingerprint}-{rank}of{world}",
        desc=f"Prefix embeddings ({split}, rank {rank})",
    )
    elapsed = time.perf_counter() - started
    lengths = pc.list_value_length(shard.data.column("input_ids")).to_numpy(zero_copy_only=False)
    encoder_tokens = prefix_encoder_tokens(lengths)
    logger.info(
        "%s: rank %d embedded %d sentences in %.1f s: %.1f sentences/s, %.0f encoder tokens/s",
        split, rank, len(shard), elapsed, len(shard) / elapsed, encoder_tokens / elapsed,
    )
    state.wait_for_everyone()
    if state.is_main_process:
        if world == 1:
            os.replace(shard_files[0], final)  # one shard is already the whole cache
        else:
            joined = concatenate_datasets([Dataset.from_file(str(f)) for f in shard_files])
            partial = cache_dir / f"{fingerprint}.partial.arrow"
            joined.map(batched=True, cache_file_name=str(partial), new_fingerprint=f"{fingerprint}-joined",
                       desc=f"Joining {world} embedding shards")
            os.replace(partial, final)  # atomic: a killed run never leaves a half-written cache behind
            for f in shard_files:
                f.unlink(missing_ok=True)
    state.wait_for_everyone()
    return _attach(dataset, Dataset.from_file(str(final)), final)


def _attach(dataset: Dataset, embeddings: Dataset, path: Path) -> Dataset:
    if len(embeddings) != len(dataset):
        raise ValueError(f"Embedding cache {path} has {len(embeddings)} rows for {len(dataset)} sentences; delete it.")
    return concatenate_datasets([dataset, embeddings], axis=1)
