"""Prefix embeddings e_j precomputed once, stored as float16 in a memory-mapped Arrow cache (EmbeddingCache),
computed by the model's own prefix encoder (PrefixEmbedder) or by any other VectorSource (vectors.py).
"""

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from accelerate import PartialState
from datasets import Array2D, Dataset, Features, Value, concatenate_datasets

from fusion_lstm_data.embedder import PrefixEmbedder

from .vectors import VectorSource, checked_vectors


logger = logging.getLogger(__name__)
SENTENCES_PER_MAP_BATCH = 64
# a precompute is stored in parts of at most this many sentences, each written as soon as it is done: a run killed
# during an hour-long precompute resumes after the last finished part (minutes of work lost, not the hour)
SENTENCES_PER_PART = 1024


def prefix_encoder_tokens(lengths) -> int:
    """Encoder tokens needed for all prefixes of sentences of these lengths: prefix k has k tokens + [SEP]."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return int((lengths * (lengths + 1) // 2 + lengths).sum())


def encoder_flops(window_lengths, encoder_config) -> int:
    """Floating-point operations (multiply and add counted apart) of a BERT-like encoder on windows of these lengths
    (tokens, [CLS] and [SEP] included), padding excluded: per layer and token, the four attention projections
    (4·h²) and the feed-forward (2·h·i) as matrix products, 2 FLOPs per weight; per layer and window, QKᵀ and the
    attention-weighted sum of V, 2·n²·h each. Embeddings, layer norms, softmax and pooling are left out (under 1 %
    here)."""
    lengths = np.asarray(window_lengths, dtype=np.int64)
    h, i = encoder_config.hidden_size, encoder_config.intermediate_size
    per_token = 2 * (4 * h * h + 2 * h * i)
    return int(encoder_config.num_hidden_layers * (lengths.sum() * per_token + 4 * (lengths ** 2).sum() * h))


def default_cache_dir() -> Path:
    from datasets import config as datasets_config

    return Path(datasets_config.HF_DATASETS_CACHE) / "fusion_lstm_embeddings"


class EmbeddingCache:
    """The prefix embeddings of one embedder (one encoder setting), stored per sentence and reused wherever that
    sentence appears again: in a later run, another variant, a subset of a file (the limited-data sizes) or another
    file that shares sentences. Only sentences never embedded before reach the encoder.

    Layout under `cache_dir/<embedder fingerprint>/`:
        part-*.arrow   sentence_key + fusion_embeds (seq_len, width) float16: each embedding run adds parts of at most
                       SENTENCES_PER_PART sentences per rank, each as soon as it is done (a killed run resumes there)
        view-<split key>.arrow   the fusion_embeds column of one split, in its row order (memory-mapped by training)
        view-<split key>.json    how it was made: sentences, how many were embedded and reused, per rank, speed
    A sentence's key hashes its token ids (and text, for embeddings computed from text). Under several processes
    each rank embeds its own contiguous shard of the missing sentences; parts and views appear under their final
    name only when complete, so a killed run never leaves a half-written file behind.
    """

    def __init__(self, embedder: VectorSource, cache_dir: str | Path | None = None):
        self.embedder = embedder
        self.cache_dir = Path(cache_dir or default_cache_dir())
        self._store = None
        self.views: dict[str, Path] = {}  # split → the view attached to it

    @property
    def store(self) -> Path:
        """This embedder's folder (its fingerprint is computed once: it reads all the encoder's weights)."""
        if self._store is None:
            self._store = self.cache_dir / self.embedder.fingerprint()[:32]
        return self._store

    def sentence_keys(self, dataset: Dataset) -> list[str]:
        """A key per row: its token ids (and text, for embeddings computed from text), and its document's previous
        sentences where the embedder reads them (a source that never does shares the sentence-level vectors)."""
        columns = dataset.column_names
        texts = dataset["text"] if "offsets" in columns else None
        reads_document = "context_input_ids" in columns and getattr(self.embedder, "reads_document", True)
        contexts = dataset.data.column("context_input_ids").to_pylist() if reads_document else None
        context_texts = dataset["context_text"] if reads_document and "context_text" in columns else None
        keys = []
        for i, ids in enumerate(dataset.data.column("input_ids").to_pylist()):
            digest = hashlib.blake2b(np.asarray(ids, dtype=np.int64).tobytes(), digest_size=16)
            if texts is not None:
                digest.update(texts[i].encode())
            if contexts is not None:
                digest.update(b"|after|" + np.asarray(contexts[i], dtype=np.int64).tobytes())
                if context_texts is not None:
                    digest.update(context_texts[i].encode())
            keys.append(digest.hexdigest())
        return keys

    def view_path(self, dataset: Dataset, keys: list[str] | None = None) -> Path:
        """Where the fusion_embeds column of `dataset` lives: named by its sentences' keys, in order."""
        keys = self.sentence_keys(dataset) if keys is None else keys
        return self.store / f"view-{hashlib.sha256(chr(10).join(keys).encode()).hexdigest()[:32]}.arrow"

    def attach(self, dataset: Dataset, split: str) -> Dataset:
        """`dataset` with a `fusion_embeds` column, embedding only the sentences the cache does not hold yet (rows
        whose document context the embedder does not read are keyed by the sentence alone: they share the
        sentence-level vectors)."""
        keys = self.sentence_keys(dataset)
        view = self.view_path(dataset, keys)
        if view.exists():
            logger.info("%s: reusing cached embeddings %s", split, view)
        else:
            self._build_view(dataset, split, keys, view)
        self.views[split] = view
        embeddings = Dataset.from_file(str(view))
        if len(embeddings) != len(dataset):
            raise ValueError(f"Embedding cache {view} has {len(embeddings)} rows for {len(dataset)} sentences; "
                             "delete it.")
        return concatenate_datasets([dataset, embeddings], axis=1)

    def record(self, split: str) -> dict:
        """How the view attached to `split` was made (view-*.json): sentences, embedded and reused, speed."""
        return json.loads(self.views[split].with_suffix(".json").read_text())

    def _parts(self) -> list[Path]:
        return sorted(p for p in self.store.glob("part-*.arrow") if not p.name.endswith(".partial.arrow"))

    def _index(self, parts: list[Path]) -> dict[str, int]:
        """sentence key → row in the parts taken one after another (the first part that holds it)."""
        index, offset = {}, 0
        for part in parts:
            part_keys = Dataset.from_file(str(part)).data.column("sentence_key").to_pylist()
            for row, key in enumerate(part_keys):
                index.setdefault(key, offset + row)
            offset += len(part_keys)
        return index

    def _build_view(self, dataset: Dataset, split: str, keys: list[str], view: Path):
        state = PartialState()
        self.store.mkdir(parents=True, exist_ok=True)
        known = self._index(self._parts())
        first_row = {}
        for row, key in enumerate(keys):
            if key not in known:
                first_row.setdefault(key, row)
        missing = sorted(first_row.values())
        state.wait_for_everyone()  # every rank has read the same index before any adds a part
        shard_counts, seconds = [], 0.0
        if missing:
            todo = dataset.select(missing).add_column("sentence_key", [keys[row] for row in missing])
            shard_counts, seconds = self._embed(todo, split, state)
        state.wait_for_everyone()
        if state.is_main_process:
            parts = self._parts()
            index = self._index(parts)
            stored = concatenate_datasets([Dataset.from_file(str(p)) for p in parts]).select([index[k] for k in keys])
            partial = view.with_suffix(".partial.arrow")
            stored.remove_columns("sentence_key").flatten_indices(cache_file_name=str(partial))
            os.replace(partial, view)
            record = {"split": split, "sentences": len(keys), "embedded": len(missing),
                      "reused": len(keys) - len(missing), "sentences_per_rank": shard_counts, "seconds": seconds,
                      "sentences_per_second": len(missing) / seconds if seconds else None}
            view.with_suffix(".json").write_text(json.dumps(record, indent=2))
            logger.info("%s: %d sentences, %d embedded now, %d from the cache", split, len(keys), len(missing),
                        len(keys) - len(missing))
        state.wait_for_everyone()

    def _embed(self, todo: Dataset, split: str, state) -> tuple[list[int], float]:
        """Each rank embeds its contiguous shard of `todo` into parts of its own, one per SENTENCES_PER_PART
        sentences, each renamed into place when done; returns the sentences per rank and the slowest rank's
        seconds."""
        world, rank = state.num_processes, state.process_index
        shard = todo.shard(num_shards=world, index=rank, contiguous=True)
        logger.info("%s: rank %d/%d embeds the prefixes of %d sentences", split, rank, world, len(shard))
        run = hashlib.sha256(f"{time.time_ns()}-{os.getpid()}".encode()).hexdigest()[:12] if state.is_main_process \
            else None
        run = broadcast_string(run, state)
        features = Features({"sentence_key": Value("string"),
                             "fusion_embeds": Array2D(shape=(None, self.embedder.width), dtype="float16")})
        starts = range(0, len(shard), SENTENCES_PER_PART)
        started = time.perf_counter()
        for number, start in enumerate(starts):
            part = self.store / f"part-{run}-{rank:03d}of{world:03d}-{number:04d}.arrow"
            partial = part.with_suffix(".partial.arrow")
            shard.select(range(start, min(start + SENTENCES_PER_PART, len(shard)))).map(
                lambda batch: {"sentence_key": batch["sentence_key"],
                               "fusion_embeds": checked_vectors(self.embedder, batch, self.embedder(batch))},
                batched=True,
                batch_size=SENTENCES_PER_MAP_BATCH,
                remove_columns=shard.column_names,
                features=features,
                cache_file_name=str(partial),
                new_fingerprint=part.stem,
                desc=f"Prefix embeddings ({split}, rank {rank}, part {number + 1} of {len(starts)})",
            )
            os.replace(partial, part)
        elapsed = time.perf_counter() - started
        lengths = pc.list_value_length(shard.data.column("input_ids")).to_numpy(zero_copy_only=False)
        logger.info("%s: rank %d embedded %d sentences in %.1f s: %.1f sentences/s, %.0f encoder tokens/s", split,
                    rank, len(shard), elapsed, len(shard) / max(elapsed, 1e-9),
                    prefix_encoder_tokens(lengths) / max(elapsed, 1e-9))
        counts = [len(todo.shard(num_shards=world, index=r, contiguous=True)) for r in range(world)]
        return counts, gather_max(elapsed, state)


def broadcast_string(value: str | None, state) -> str:
    """The main process's string, on every rank."""
    if state.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value])[0]


def gather_max(value: float, state) -> float:
    if state.num_processes == 1:
        return value
    from accelerate.utils import gather_object

    return max(gather_object([value]))


class JoinedEmbeddingCache(EmbeddingCache):
    """e_j made of several vectors side by side (fusion_context prefix+previous), each part's vectors in an
    EmbeddingCache of their own (shared with the runs that fuse that part alone); the joined rows are a view in this
    embedder's folder, built from the parts' views."""

    def __init__(self, embedder: PrefixEmbedder, cache_dir: str | Path | None = None):
        super().__init__(embedder, cache_dir)
        self.parts = [EmbeddingCache(part, cache_dir) for part in embedder.parts]

    def _joined_record(self, split: str) -> dict:
        """The parts' records; sentences per second of the whole precompute (parts one after another) where each
        part's is known."""
        parts = [part.record(split) for part in self.parts]
        speeds = [part["sentences_per_second"] for part in parts]
        combined = 1 / sum(1 / speed for speed in speeds) if all(speeds) else None
        return {"split": split, "sentences": parts[0]["sentences"], "parts": parts, "sentences_per_second": combined}

    def _build_view(self, dataset: Dataset, split: str, keys: list[str], view: Path):
        state = PartialState()
        self.store.mkdir(parents=True, exist_ok=True)
        for part in self.parts:
            part.attach(dataset, split)
        if state.is_main_process:
            columns = [Dataset.from_file(str(part.views[split])).rename_column("fusion_embeds", f"part{i}")
                       for i, part in enumerate(self.parts)]
            joined = concatenate_datasets(columns, axis=1).with_format("numpy")
            features = Features({"fusion_embeds": Array2D(shape=(None, self.embedder.width), dtype="float16")})

            def join(batch):
                return {"fusion_embeds": [np.concatenate(row, axis=1)
                                          for row in zip(*(batch[c] for c in joined.column_names))]}

            partial = view.with_suffix(".partial.arrow")
            joined.map(join, batched=True, features=features, remove_columns=joined.column_names,
                       cache_file_name=str(partial), new_fingerprint=view.stem, desc=f"Joining e_j's parts ({split})")
            os.replace(partial, view)
            view.with_suffix(".json").write_text(json.dumps(self._joined_record(split), indent=2))
        state.wait_for_everyone()


class RearrangedEmbeddingCache(EmbeddingCache):
    """The cache of a source that wraps another and rearranges its vectors across a split's sentences (shuffled):
    the inner source's cache (shared with the runs that fuse its vectors as they are), then the source's
    `rearrange`."""

    def __init__(self, source: VectorSource, cache_dir: str | Path | None = None):
        super().__init__(source, cache_dir)
        self.inner = embedding_cache(source.inner, cache_dir)
        self.views = self.inner.views

    def attach(self, dataset: Dataset, split: str) -> Dataset:
        return self.embedder.rearrange(self.inner.attach(dataset, split), split)

    def record(self, split: str) -> dict:
        return self.inner.record(split)


def embedding_cache(source: VectorSource, cache_dir: str | Path | None = None) -> EmbeddingCache:
    """The cache for `source`: one of its own, one per part for a source of several (prefix+previous), or its inner
    source's for a source that rearranges another's vectors (shuffled)."""
    if len(getattr(source, "parts", ())) > 1:
        return JoinedEmbeddingCache(source, cache_dir)
    if hasattr(source, "rearrange"):
        return RearrangedEmbeddingCache(source, cache_dir)
    return EmbeddingCache(source, cache_dir)

