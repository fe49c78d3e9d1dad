"""e_j computed by a model's own prefix encoder for batches of tokenized sentences (`PrefixEmbedder`), from the LM's
token ids or, with another LM tokenizer (a trained BPE), from the text of each window; what training caches
(fusion_lstm_training/embeddings.py) and what surprisal scoring computes on the fly."""

import copy
import functools
import hashlib
import json

import numpy as np
import torch

from .batches import pad_right


def encoder_fingerprint(prefix_encoder, context=None) -> str:
    """Hash of everything that turns token ids into e_j (or into the vectors of one part of the context): the
    prefix encoder's encoder config and weights, its pooling, the context (default: its own) and its truncation
    length. Reads every weight: compute it once per run."""
    context = context or prefix_encoder.context
    config = prefix_encoder.config
    digest = hashlib.sha256(json.dumps(config.encoder.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(prefix_encoder.encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    digest.update(f"{config.encoder_pooling}|{context.key}|{prefix_encoder.max_length}".encode())
    return digest.hexdigest()


class PrefixEmbedder:
    """A VectorSource (fusion_lstm_training/vectors.py): e_j for batches of tokenized sentences, computed by a
    `FusionLSTMPrefixEncoder` (a model's `prefix_encoder`, or one built alone with
    `FusionLSTMPrefixEncoder.from_encoder_pretrained`).

    With the encoder's vocabulary (the default) the encoder reads the LM's token ids, exactly as inside the model.
    With another LM tokenizer (e.g. a trained BPE), pass the encoder's own `encoder_tokenizer`: e_j then embeds the
    text of the prefix's window (`EncoderWindow.texts`), read from the sentence's text and token `offsets`.
    `context` (default: the prefix encoder's) may be one part of the prefix encoder's context: the embedder then
    gives just that part's vectors (see `parts`).
    """

    def __init__(self, prefix_encoder, lm_tokenizer, encoder_tokenizer=None, autocast_dtype: torch.dtype | None = None,
                 context=None, encoder=None):
        self.prefix_encoder = prefix_encoder
        self.lm_tokenizer = lm_tokenizer
        self.encoder_tokenizer = encoder_tokenizer
        self.autocast_dtype = autocast_dtype  # e.g. bfloat16: about twice as fast on CPUs with AVX512-BF16
        self.context = context or prefix_encoder.context
        self._encoder = encoder

    @property
    def encoder(self):
        """The module that computes the vectors: the prefix encoder itself, or under autocast a copy made at the first
        call whose linear layers hold their weights in the autocast dtype. Autocast casts a frozen weight again at
        every call; the copy computes the same numbers (tested) without those casts (`bench/run.py --sections precompute`
        measures the difference). The fingerprint stays the prefix encoder's."""
        if self._encoder is None:
            self._encoder = self.prefix_encoder if self.autocast_dtype is None else linear_weights_in(
                self.prefix_encoder, self.autocast_dtype)
        return self._encoder

    @property
    def windows(self) -> tuple:
        """The single-window contexts of this embedder's context (prefix+previous: two)."""
        return self.context.parts

    @property
    def width(self) -> int:
        return self.prefix_encoder.part_width * len(self.windows)

    @functools.cached_property
    def parts(self) -> list["PrefixEmbedder"]:
        """One embedder per window of the context (fusion_context prefix+previous: two), each cached on its own; they
        share this embedder's computing copy."""
        return [PrefixEmbedder(self.prefix_encoder, self.lm_tokenizer, self.encoder_tokenizer, self.autocast_dtype,
                               part, self.encoder) for part in self.windows]

    @property
    def reads_document(self) -> bool:
        """Whether a window reaches into the document's previous sentences (see EmbeddingCache.attach)."""
        return any(part.reads_document for part in self.windows)

    def _context_argument(self) -> dict:
        """How the prefix encoder is told which window to embed: nothing for its own context."""
        return {} if self.context is self.prefix_encoder.context else {"context": self.context}

    @property
    def precision(self) -> str:
        return "fp32" if self.autocast_dtype is None else str(self.autocast_dtype).replace("torch.", "")

    def fingerprint(self) -> str:
        """Hash of what turns token ids into vectors: the prefix encoder (weights, config, pooling, context,
        truncation), the precision and the tokenizers."""
        encoder = encoder_fingerprint(self.prefix_encoder, self.context)
        digest = hashlib.sha256(f"{self.precision}|{encoder}".encode())
        for tokenizer in (self.lm_tokenizer, self.encoder_tokenizer):
            if tokenizer is not None:
                digest.update(tokenizer.backend_tokenizer.to_str().encode())
        if self.encoder_tokenizer is not None:
            # text windows end where the tokens so far complete a character (data.known_ends); vectors cached before
            # this rule could hold a character split over byte tokens one token early
            digest.update(b"|windows end at complete characters")
        return digest.hexdigest()

    @torch.inference_mode()
    def __call__(self, batch: dict) -> dict:
        if len(self.windows) > 1:
            joined = zip(*(part(batch)["fusion_embeds"] for part in self.parts))
            return {"fusion_embeds": [np.concatenate(vectors, axis=1) for vectors in joined]}
        device = next(self.prefix_encoder.parameters()).device
        with torch.autocast(device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            if self.encoder_tokenizer is None:
                vectors = self._from_token_ids(batch["input_ids"], batch.get("context_input_ids"), device)
            else:
                context_texts = batch.get("context_text") or [""] * len(batch["text"])
                vectors = self._from_text(batch["text"], batch["offsets"], context_texts)
        return {"fusion_embeds": [v.to(torch.float16).cpu().numpy() for v in vectors]}

    def _from_token_ids(self, input_ids: list[list[int]], context_ids: list[list[int]] | None,
                        device) -> list[torch.Tensor]:
        padded, mask = pad_right(input_ids, pad_id=0)
        context = {}
        if context_ids is not None and self.reads_document:
            context_padded, context_mask = pad_right(context_ids, pad_id=0)
            context = {"context_input_ids": context_padded.to(device), "context_attention_mask": context_mask.to(device)}
        out = self.encoder(padded.to(device), mask.to(device), num_new=padded.shape[1], **context,
                                  **self._context_argument())
        return [out[i, : len(ids)] for i, ids in enumerate(input_ids)]

    def _from_text(self, texts: list[str], offsets: list[list[int]], context_texts: list[str]) -> list[torch.Tensor]:
        context = self.context
        if context.is_whole_sentence:
            # one embedding of the whole sentence, repeated at every position
            pooled = self.encoder.embed_texts(texts, self.encoder_tokenizer)
            return [vector.expand(len(ends), -1) for vector, ends in zip(pooled, offsets)]
        prefixes = [context.texts(text, ends, before) for text, ends, before in zip(texts, offsets, context_texts)]
        flat = [p for rows in prefixes for p in rows]
        if context.is_one_per_sentence:
            # the same window at every position of a sentence: each distinct text is embedded once
            distinct = list(dict.fromkeys(flat))
            pooled = self.encoder.embed_texts(distinct, self.encoder_tokenizer)
            where = {text: i for i, text in enumerate(distinct)}
            pooled = pooled[torch.tensor([where[p] for p in flat])]
        else:
            pooled = self.encoder.embed_texts(flat, self.encoder_tokenizer)
        return list(pooled.split([len(rows) for rows in prefixes]))


def linear_weights_in(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of `module` whose linear layers hold their weights and biases in `dtype` (the rest as it was): under
    autocast to `dtype` it computes exactly what `module` does, without casting the weights at every call."""
    cast = copy.deepcopy(module)
    for layer in cast.modules():
        if isinstance(layer, torch.nn.Linear):
            layer.to(dtype)
    return cast
