"""Prefix embeddings e_j precomputed once, stored as float16 in a memory-mapped Arrow cache (EmbeddingCache),
computed by the model's own prefix encoder (PrefixEmbedder) or by any other vector source with the same interface.
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

    The interface EmbeddingCache needs from any vector source: `width`, `fingerprint()` and `__call__(batch)`
    returning {"fusion_embeds": [array (len(ids), width) per sentence]}.
    """

    def __init__(self, model, lm_tokenizer, encoder_tokenizer=None, autocast_dtype: torch.dtype | None = None):
        self.prefix_encoder = model.prefix_encoder
        self.config = model.config
        self.lm_tokenizer = lm_tokenizer
        self.encoder_tokenizer = encoder_tokenizer
        self.autocast_dtype = autocast_dtype  # e.g. bfloat16: about twice as fast on CPUs with AVX512-BF16

    @property
    def width(self) -> int:
        return self.config.fusion_embedding_size

    @property
    def precision(self) -> str:
        return "fp32" if self.autocast_dtype is None else str(self.autocast_dtype).replace("torch.", "")

    def fingerprint(self) -> str:
        """Hash of what turns token ids into vectors: the prefix encoder (weights, config, pooling, context,
        truncation), the precision and the tokenizers."""
        digest = hashlib.sha256(f"{self.precision}|{self.prefix_encoder.fingerprint()}".encode())
        for tokenizer in (self.lm_tokenizer, self.encoder_tokenizer):
            if tokenizer is not None:
                digest.update(tokenizer.backend_tokenizer.to_str().encode())
        return digest.hexdigest()

    @torch.inference_mode()
    def __call__(self, batch: dict) -> dict:
        device = next(self.prefix_encoder.parameters()).device
        with torch.autocast(device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            if self.encoder_tokenizer is None:
                vectors = self._from_token_ids(batch["input_ids"], device)
            else:
                vectors = self._from_text(batch["text"], batch["offsets"])
        return {"fusion_embeds": [v.to(torch.float16).cpu().numpy() for v in vectors]}

    def _from_token_ids(self, input_ids: list[list[int]], device) -> list[torch.Tensor]:
        padded, mask = pad_right(input_ids, pad_id=0)
        out = self.prefix_encoder(padded.to(device), mask.to(device), num_new=padded.shape[1])
        return [out[i, : len(ids)] for i, ids in enumerate(input_ids)]

    def _from_text(self, texts: list[str], offsets: list[list[int]]) -> list[torch.Tensor]:
        if self.config.fusion_context == "sentence":
            prefixes = [[text] * len(ends) for text, ends in zip(texts, offsets)]
        else:
            prefixes = [[text[:end] for end in ends] for text, ends in zip(texts, offsets)]
        pooled = self.prefix_encoder.embed_texts([p for rows in prefixes for p in rows], self.encoder_tokenizer)
        return list(pooled.split([len(rows) for rows in prefixes]))


class EmbeddingCache:
    """The prefix-embedding cache of one run: each split gets a `fusion_embeds` column (seq_len, width) in
    float16, memory-mapped from `cache_dir/<key>.arrow`, computed once and reused by every later run with the same
    vectors (the key hashes the embedder's fingerprint, computed once, and the split's token ids).

    Under several processes each rank embeds its own contiguous shard, the shards are joined once into one cache
    file, and every rank memory-maps it. Beside each cache file, `<key>.json` records how it was made (sentences,
    sentences per rank, time, throughput)."""

    def __init__(self, embedder, cache_dir: str | Path | None = None):
        self.embedder = embedder
        self.cache_dir = Path(cache_dir or default_cache_dir())
        self._embedder_key = None

    @property
    def embedder_key(self) -> str:
        if self._embedder_key is None:
            self._embedder_key = self.embedder.fingerprint()
        return self._embedder_key

    def key(self, dataset: Dataset) -> str:
        """The cache key of one split: the embedder's fingerprint plus the data's token ids (and text, for
        embeddings computed from text)."""
        digest = hashlib.sha256(self.embedder_key.encode())
        ids = dataset.data.column("input_ids")
        digest.update(pc.list_value_length(ids).to_numpy(zero_copy_only=False).tobytes())
        digest.update(pc.list_flatten(ids).to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
        if "offsets" in dataset.column_names:
            digest.update("\n".join(dataset["text"]).encode())
        return digest.hexdigest()[:32]

    def path(self, dataset: Dataset) -> Path:
        return self.cache_dir / f"{self.key(dataset)}.arrow"

    def attach(self, dataset: Dataset, split: str) -> Dataset:
        """`dataset` with a `fusion_embeds` column, from the cache when it exists."""
        key = self.key(dataset)
        final = self.cache_dir / f"{key}.arrow"
        if final.exists():
            logger.info("%s: reusing cached embeddings %s", split, final)
        else:
            self._build(dataset, split, key, final)
        embeddings = Dataset.from_file(str(final))
        if len(embeddings) != len(dataset):
            raise ValueError(f"Embedding cache {final} has {len(embeddings)} rows for {len(dataset)} sentences; "
                             "delete it.")
        return concatenate_datasets([dataset, embeddings], axis=1)

    def _build(self, dataset: Dataset, split: str, key: str, final: Path):
        state = PartialState()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        features = Features({"fusion_embeds": Array2D(shape=(None, self.embedder.width), dtype="float16")})
        world, rank = state.num_processes, state.process_index
        shard_files = [self.cache_dir / f"{key}.shard{i}of{world}.arrow" for i in range(world)]
        shard = dataset.shard(num_shards=world, index=rank, contiguous=True)
        logger.info("%s: rank %d/%d embeds the prefixes of %d sentences", split, rank, world, len(shard))
        started = time.perf_counter()
        shard.map(
            self.embedder,
            batched=True,
            batch_size=SENTENCES_PER_MAP_BATCH,
            remove_columns=shard.column_names,
            features=features,
            cache_file_name=str(shard_files[rank]),
            new_fingerprint=f"{key}-{rank}of{world}",
            desc=f"Prefix embeddings ({split}, rank {rank})",
        )
        elapsed = time.perf_counter() - started
        lengths = pc.list_value_length(shard.data.column("input_ids")).to_numpy(zero_copy_only=False)
        encoder_tokens = prefix_encoder_tokens(lengths)
        logger.info(
            "%s: rank %d embedded %d sentences in %.1f s: %.1f sentences/s, %.0f encoder tokens/s",
            split, rank, len(shard), elapsed, len(shard) / elapsed, encoder_tokens / elapsed,
        )
        record = {"rank": rank, "sentences": len(shard), "seconds": elapsed, "encoder_tokens": encoder_tokens}
        (self.cache_dir / f"{key}.shard{rank}of{world}.json").write_text(json.dumps(record))
        state.wait_for_everyone()
        if state.is_main_process:
            if world == 1:
                os.replace(shard_files[0], final)  # one shard is already the whole cache
            else:
                joined = concatenate_datasets([Dataset.from_file(str(f)) for f in shard_files])
                partial = self.cache_dir / f"{key}.partial.arrow"
                joined.map(batched=True, cache_file_name=str(partial), new_fingerprint=f"{key}-joined",
                           desc=f"Joining {world} embedding shards")
                os.replace(partial, final)  # atomic: a killed run never leaves a half-written cache behind
                for f in shard_files:
                    f.unlink(missing_ok=True)
            self._write_record(split, key, world)
        state.wait_for_everyone()

    def _write_record(self, split: str, key: str, world: int):
        ranks = []
        for rank in range(world):
            record_file = self.cache_dir / f"{key}.shard{rank}of{world}.json"
            ranks.append(json.loads(record_file.read_text()))
            record_file.unlink()
        seconds = max(r["seconds"] for r in ranks)
        sentences = sum(r["sentences"] for r in ranks)
        record = {"split": split, "sentences": sentences, "sentences_per_rank": [r["sentences"] for r in ranks],
                  "seconds": seconds, "sentences_per_second": sentences / seconds if seconds else None,
                  "encoder_tokens_per_second": sum(r["encoder_tokens"] for r in ranks) / seconds if seconds else None}
        (self.cache_dir / f"{key}.json").write_text(json.dumps(record, indent=2))
