"""PyTorch FusionLSTM: an LSTM language model with a pretrained sentence encoder's prefix embeddings fused in
(Zouhar, Mosbach, Klakow 2022, "Fusing Sentence Embeddings Into LSTM-based Autoregressive Language Models")."""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.generation import GenerationMixin
from transformers.modeling_utils import slice_logits_to_keep
from transformers.utils import ModelOutput

from .configuration_fusion_lstm import CONTEXTS, FUSIONS, FusionLSTMConfig, FusionStage, context_parts


# Encoder rows of similar length are batched together up to this many tokens (rows × padded width), which
# bounds the encoder's activation memory without paying for one call per prefix.
ENCODER_TOKENS_PER_BATCH = 2048


# ----------------------------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------------------------


def compact_rows(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Move each row's real entries (mask 1) to the front, in order; padding goes behind them.

    values (batch, seq_len, ...) and mask (batch, seq_len) → (batch, seq_len, ...). With right padding this is the
    identity, with left padding it turns the batch into a right-padded one.
    """
    order = torch.argsort((mask == 0).to(torch.int8), dim=1, stable=True)
    if values.dim() > 2:
        order = order.view(*order.shape, *([1] * (values.dim() - 2))).expand_as(values)
    return values.gather(1, order)


def scatter_to_positions(compact: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Inverse of `compact_rows` for outputs: (batch, n, width) compact rows → (batch, seq_len, width) at the real
    positions of `mask` (batch, seq_len); padded positions get zeros."""
    rank = (mask.cumsum(1) - 1).clamp(min=0)
    gathered = compact.gather(1, rank.unsqueeze(-1).expand(-1, -1, compact.shape[-1]))
    return gathered * mask.unsqueeze(-1).to(gathered.dtype)


def join_context(compact: torch.Tensor, context: torch.Tensor,
                 context_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's context put right after its first token. compact (batch, seq_len, ...) holds each row's real entries
    left-aligned (`compact_rows`); context (batch, context_len, ...) the document's previous sentences, real where
    context_mask (batch, context_len) is 1. Returns the joined rows (batch, seq_len + context_len, ...):
    compact[b, 0], the n_b real context entries, compact[b, 1:], left-aligned, then padding (whatever lay behind: mask
    it); and n (batch,), each row's context length."""
    context_length = context_mask.sum(1).to(compact.device)
    width = compact.shape[1]
    joined = torch.cat([compact, compact_rows(context, context_mask)], dim=1)
    position = torch.arange(joined.shape[1], device=joined.device).unsqueeze(0)
    n = context_length.unsqueeze(1)
    source = torch.where(position == 0, 0, torch.where(position <= n, width + position - 1, position - n))
    source = source.clamp(max=joined.shape[1] - 1)
    if joined.dim() > 2:
        source = source.view(*source.shape, *([1] * (joined.dim() - 2))).expand(-1, -1, *joined.shape[2:])
    return joined.gather(1, source), context_length


def check_mask_values(mask: torch.Tensor, name: str):
    """A mask holds only 0 and 1 (or is boolean): lengths come from its sums."""
    if mask.dtype != torch.bool and bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError(f"{name} must hold only 0 and 1 (or be boolean), got the values "
                         f"{sorted(set(mask.unique().tolist()))[:5]}.")


def refuse_context_length(kwargs: dict):
    """`context_length` (the document's previous sentences inside input_ids) is gone: say how to pass them now."""
    if "context_length" in kwargs:
        raise ValueError("`context_length` is no longer an input: pass the document's previous sentences as their own "
                         "tensors, context_input_ids and context_attention_mask (batch, context_len), and input_ids as "
                         "BOS + the sentence alone (a row built before holds, after BOS, its n = context_length context "
                         "tokens: context_input_ids = ids[1 : 1 + n], input_ids = ids[:1] + ids[1 + n :]).")


def is_right_padded(mask: torch.Tensor) -> bool:
    """True when every row is real tokens followed only by padding (the training layout)."""
    return bool((mask[:, 1:] <= mask[:, :-1]).all())


class PrefixRows(NamedTuple):
    """One row per real position among the last `num_new` of a batch: the prefix that ends there.

    new_mask (batch, num_new) bool: which of the new positions are real; batch_index (rows,): the sequence of each
    row; length (rows,): the prefix's length in real tokens (tokens 0..j, history included)."""

    new_mask: torch.Tensor
    batch_index: torch.Tensor
    length: torch.Tensor

    @classmethod
    def of(cls, mask: torch.Tensor, num_new: int) -> "PrefixRows":
        """mask (batch, seq_len): the whole sequence so far, whose last `num_new` positions are new."""
        batch, seq_len = mask.shape
        new_mask = mask[:, seq_len - num_new :].bool()
        length = mask.cumsum(1)[:, seq_len - num_new :][new_mask]
        batch_index = torch.arange(batch, device=mask.device).unsqueeze(1).expand(-1, num_new)[new_mask]
        return cls(new_mask, batch_index, length)

    def to_positions(self, values: torch.Tensor) -> torch.Tensor:
        """values (rows, width), one per row → (batch, num_new, width), zeros at padded positions."""
        out = values.new_zeros(*self.new_mask.shape, values.shape[-1])
        out[self.new_mask] = values
        return out


# The window of each single-window fusion_context (CONTEXTS in configuration_fusion_lstm.py says what each is): for
# the prefix of `length` tokens (tokens 0..j) of a sentence of `sentence_length` tokens (BOS and EOS included),
# (start, end): the encoder reads the first token ([CLS], the LM's BOS), then, for a mode that reads the document,
# the document's previous sentences, then the sentence's tokens start..end-1. One signature:
# window(length, sentence_length, fraction) → (start, end), tensors shaped like `length`; a window that reads the
# document starts at 1, so that the previous sentences and the sentence's tokens are one contiguous text.
def _prefix_window(length, sentence_length, fraction):  # tokens 0..j of the sentence
    return torch.ones_like(length), length


def _sentence_window(length, sentence_length, fraction):  # the whole sentence (the leaky probe)
    return torch.ones_like(length), sentence_length


def _subr_window(length, sentence_length, fraction):  # only the sentence's first part: tokens 0..min(j, c)
    return torch.ones_like(length), torch.minimum(length, _cut(sentence_length, fraction) + 1)


def _subl_window(length, sentence_length, fraction):  # the first part dropped: tokens c..j
    return torch.minimum(_cut(sentence_length, fraction).clamp(min=1), length), length


def _previous_window(length, sentence_length, fraction):  # the previous sentences alone, the same at every j
    return torch.ones_like(length), torch.ones_like(length)


def _document_window(length, sentence_length, fraction):  # the previous sentences and tokens 0..j
    return torch.ones_like(length), length


def _cut(sentence_length, fraction):
    """c = int(fraction · |S|), the sub-prefix feeders' cut."""
    return (sentence_length.to(torch.float64) * fraction).floor().to(sentence_length.dtype)


CONTEXT_WINDOWS = {"prefix": _prefix_window, "sentence": _sentence_window, "subr": _subr_window,
                   "subl": _subl_window, "previous": _previous_window, "document": _document_window}
if set(CONTEXT_WINDOWS) != {mode for mode, spec in CONTEXTS.items() if spec.parts == (mode,)}:
    raise ValueError(f"CONTEXT_WINDOWS {sorted(CONTEXT_WINDOWS)} must hold one window per single-window mode of "
                     "CONTEXTS.")
for _mode in CONTEXT_WINDOWS:  # the previous sentences and the sentence's tokens must make one contiguous text
    if CONTEXTS[_mode].reads_document and int(CONTEXT_WINDOWS[_mode](torch.tensor([3]), torch.tensor([5]), 0.5)[0]) != 1:
        raise ValueError(f"CONTEXT_WINDOWS[{_mode!r}] reads the document, so its window must start at 1.")


def encoder_text_ends(tokenizer) -> tuple[int, int]:
    """The ids an encoder's window of text starts and ends with: [CLS] and [SEP] for a BERT-like encoder, else its
    BOS and EOS (a GPT-2 encoder: <|endoftext|> both); a tokenizer with neither is refused, naming it."""
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if start is None or end is None:
        raise ValueError(f"The encoder's tokenizer ({type(tokenizer).__name__}, {tokenizer.name_or_path}) declares no "
                         "start token (cls or bos) or no end token (sep or eos), which each window of text is read "
                         "between: use an encoder whose tokenizer declares them, or set them on its tokenizer.")
    return start, end


class PrefixContext(NamedTuple):
    """What the encoder reads at position j: the one rule of `fusion_context`, used by the in-model encoder (token
    ids), the precompute from text (an LM tokenizer other than the encoder's), the count/tfidf vector sources and
    the similarity probe. Always the first token ([CLS], the LM's BOS), then:

        prefix     tokens 0..j of the sentence (causal, the paper's model)
        sentence   the whole sentence, at every position (the paper's leaky probe: not causal)
        subr       tokens 0..min(j, c): only the sentence's first part
        subl       tokens c..j: the first part dropped (an empty window embeds just the start and end tokens)
        previous   the previous sentences of the document: one vector for every position of the sentence
        document   the previous sentences of the document and tokens 0..j of the sentence
        prefix+previous   two windows, prefix and previous, embedded apart: e_j is their two vectors side by side

    with c = int(fraction · |S|), |S| the sentence's length in tokens (BOS and EOS included). The sub-prefix feeders
    read |S|, which a causal LM cannot know: probes, not models to generate with. The document's previous sentences
    are the model's `context_input_ids`, apart from the sentence; only the modes that read the document see them.
    """

    mode: str = "prefix"
    fraction: float = 0.5

    @classmethod
    def of(cls, config: FusionLSTMConfig) -> "PrefixContext":
        return cls(config.fusion_context, config.fusion_context_fraction)

    @property
    def parts(self) -> tuple["PrefixContext", ...]:
        """The single-window contexts whose vectors make e_j, one after another (just this one, but for a join)."""
        return tuple(PrefixContext(mode, self.fraction) for mode in context_parts(self.mode))

    @property
    def reads_document(self) -> bool:
        """Whether the window reads the document's previous sentences (otherwise it never sees them: a prefix's
        vectors are those of the sentence alone)."""
        return CONTEXTS[self.mode].reads_document

    @property
    def is_whole_sentence(self) -> bool:
        """Whether every position reads the whole sentence (one embedding of it, repeated)."""
        return CONTEXTS[self.mode].vectors == "sample"

    @property
    def is_one_per_sentence(self) -> bool:
        """Whether every position of a sentence reads the same window (so it is embedded once)."""
        return CONTEXTS[self.mode].vectors == "sentence"

    @property
    def key(self) -> str:
        """The context's part of an embedding fingerprint (the fraction only where it matters, so caches of the
        other modes stay valid)."""
        return f"{self.mode}{self.fraction!r}" if self.mode in ("subr", "subl") else self.mode

    def windows(self, length: torch.Tensor, sentence_length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For the prefix of `length` tokens (tokens 0..j of the sentence, j = length - 1) of a sentence of
        `sentence_length` tokens: (start, end), each shaped like `length`, such that the encoder reads the first
        token, then the document's previous sentences if this mode reads them, then the sentence's tokens
        start..end-1; 1 ≤ start ≤ end (start == end: no token of the sentence)."""
        self._check_single_window()
        return CONTEXT_WINDOWS[self.mode](length, sentence_length.to(length.dtype), self.fraction)

    def texts(self, text: str, ends: list[int], context_text: str = "") -> list[str]:
        """The text the encoder reads at each position of the sentence `text`, whose token j ends at character
        ends[j] (BOS ends at 0), after the document's previous sentences `context_text` (joined to the sentence by
        one space; read only by the modes that read the document): the window of each position, as text."""
        self._check_single_window()
        length = torch.arange(1, len(ends) + 1)
        starts, stops = self.windows(length, torch.full_like(length, len(ends)))
        before = context_text.strip() if self.reads_document else ""
        return [f"{before} {text[ends[start - 1] : ends[stop - 1]].strip()}".strip()
                for start, stop in zip(starts.tolist(), stops.tolist())]

    def _check_single_window(self):
        if len(self.parts) > 1:
            raise ValueError(f"fusion_context={self.mode!r} has one window per part: take the windows of each of "
                             "its `parts`.")


# ----------------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------------


# The tensor side of FUSIONS (configuration_fusion_lstm.py, which says what each strategy is and at which stage it
# acts). One signature: fusion(h, c, e) → (h, c), e_j fused into an LSTM state, e_j already projected to hidden_size
# where FUSIONS says elementwise. Early fusion applies it to the zero initial state (h0, c0) before the LSTM runs;
# late fusion to the LSTM output h_j (c is None); embedding_only to no state at all (h and c are None).
FUSION_FUNCTIONS: dict[str, Callable] = {
    "none": lambda h, c, e: (h, c),  # 0: the plain LSTM LM baseline
    "concat": lambda h, c, e: (torch.cat([h, e], dim=-1), c),  # 1: [h_j; e_j]
    "add": lambda h, c, e: (h + e, c),  # 2: h_j + e_j
    "multiply": lambda h, c, e: (h * e, c),  # 3: h_j ⊙ e_j
    "init_h": lambda h, c, e: (e, c),  # 4: h0 = e_j
    "init_c": lambda h, c, e: (h, e),  # 5: c0 = e_j
    "init_hc": lambda h, c, e: (e, e),  # 6: h0 = c0 = e_j
    "embedding_only": lambda h, c, e: (torch.relu(e), c),  # the artefact-only probe: no h_j, ReLU(W e_j + b) alone
}
if set(FUSION_FUNCTIONS) != set(FUSIONS):
    raise ImportError(
        "FUSIONS (configuration_fusion_lstm.py) and FUSION_FUNCTIONS (modeling_fusion_lstm.py) name different "
        f"strategies: {sorted(set(FUSIONS) ^ set(FUSION_FUNCTIONS))}. Each strategy needs a row in both."
    )


def token_id_problem(config: FusionLSTMConfig) -> str | None:
    """Why the encoder cannot read the LM's token ids (None: it can)."""
    if not config.encoder_reads_lm_ids:
        return (f"This model's vocabulary ({config.vocab_size} tokens) is not its encoder's "
                f"({getattr(config.encoder, 'vocab_size', None)}), so the encoder cannot read the LM's token ids: pass "
                "precomputed `fusion_embeds` instead.")
    if config.eos_token_id is None:
        return "FusionLSTMConfig.eos_token_id (the encoder's end token, e.g. [SEP]) must be set."
    return None


class FusionLSTMPrefixEncoder(nn.Module):
    """Runs the pretrained masked-LM encoder on prefixes and pools each into one vector e_j.

    The LM shares the encoder's vocabulary: the prefix of position j is [tokens 0..j] + the end token (the LM's EOS,
    the encoder's [SEP]), so with BOS = [CLS] it is exactly what the encoder saw in pre-training. Prefixes longer
    than the encoder's maximum keep their first token ([CLS]) and their most recent tokens.

    Which tokens of the prefix it reads is `PrefixContext`'s rule (config.fusion_context). This module owns the
    encoder's freezing: with `config.freeze_encoder` the encoder has no gradients and stays in eval mode
    (deterministic e_j) whatever mode the LM is in.
    """

    def __init__(self, config: FusionLSTMConfig):
        super().__init__()
        self.config = config
        self.context = PrefixContext.of(config)
        self.encoder = AutoModel.from_config(config.encoder)
        self.max_length = getattr(config.encoder, "max_position_embeddings", None) or 512
        # checked once: whether the encoder can read the LM's token ids (the text path, embed_texts, always works)
        self.token_id_problem = token_id_problem(config)
        self.train()

    @classmethod
    def from_encoder_pretrained(cls, encoder_name_or_path, **config_fields) -> "FusionLSTMPrefixEncoder":
        """The prefix encoder alone, around a pretrained encoder (to embed prefixes without a language model);
        keyword arguments set the FusionLSTMConfig fields it reads (encoder_pooling, fusion_context, vocab_size,
        eos_token_id, …)."""
        encoder = AutoModel.from_pretrained(encoder_name_or_path)
        module = cls(FusionLSTMConfig(encoder=encoder.config, **config_fields))
        module.encoder.load_state_dict(encoder.state_dict())  # into the existing parameters: keeps their freeze
        return module

    @property
    def width(self) -> int:
        """Width of e_j."""
        return self.config.fusion_embedding_size

    @property
    def part_width(self) -> int:
        """Width of the vector of one window (e_j holds one per part of the context)."""
        return self.width // len(self.context.parts)

    def train(self, mode: bool = True):
        # nn.Module.train reaches here from the model's train() and eval(), including the eval() that ends
        # from_pretrained, whose loading recreates the parameters with requires_grad=True
        frozen = self.config.freeze_encoder
        self.encoder.requires_grad_(not frozen)
        return super().train(mode and not frozen)

    def fingerprint(self, context: PrefixContext | None = None) -> str:
        """Hash of everything that turns token ids into e_j (or into the vectors of one part of the context): the
        encoder's config and weights, the pooling, the context and the truncation length. Reads every weight:
        compute it once per run."""
        context = context or self.context
        digest = hashlib.sha256(json.dumps(self.config.encoder.to_dict(), sort_keys=True, default=str).encode())
        for name, tensor in sorted(self.encoder.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        digest.update(f"{self.config.encoder_pooling}|{context.key}|{self.max_length}".encode())
        return digest.hexdigest()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_new: int,
                context_input_ids: torch.Tensor | None = None, context_attention_mask: torch.Tensor | None = None,
                context: PrefixContext | None = None) -> torch.Tensor:
        """input_ids, attention_mask (batch, seq_len): the sentence so far; context_input_ids, context_attention_mask
        (batch, context_len): the document's previous sentences (None: none). Returns (batch, num_new, width): e_j for
        each of the last `num_new` positions (zeros at padded positions); with `context`, one part of this module's
        context, just that part's vectors (batch, num_new, part_width)."""
        if self.token_id_problem:
            raise ValueError(self.token_id_problem)
        compact = compact_rows(input_ids, attention_mask)  # shared by the windows of every part
        document = None  # the sentence with its previous sentences after the first token, for the parts that read them
        if context_input_ids is not None:
            context_mask = attention_mask.new_ones(context_input_ids.shape) if context_attention_mask is None \
                else context_attention_mask.to(attention_mask.dtype)
            document = join_context(compact, context_input_ids, context_mask)
        parts = (context or self.context).parts
        vectors = [self._embed_window(part, compact, document, attention_mask, num_new) for part in parts]
        return vectors[0] if len(vectors) == 1 else torch.cat(vectors, dim=-1)

    def _embed_window(self, context: PrefixContext, compact, document, attention_mask, num_new):
        """The vectors of one window per position; `compact` holds the real tokens of each row, left-aligned,
        `document` (or None) the same rows with their previous sentences after the first token, and their count."""
        end = self.config.eos_token_id
        if context.is_whole_sentence:
            # one row per sequence, the whole (real) sequence: the same e for every position
            batch_index = torch.arange(compact.shape[0], device=compact.device)
            pooled = self.embed_rows(compact, batch_index, attention_mask.sum(1), end)
            new_real = attention_mask[:, -num_new:].unsqueeze(-1).to(pooled.dtype)
            return pooled.unsqueeze(1) * new_real
        rows = PrefixRows.of(attention_mask, num_new)
        start, stop = context.windows(rows.length, attention_mask.sum(1)[rows.batch_index])
        if context.reads_document and document is not None:
            # the window starts right after the first token: the previous sentences come first
            compact, context_length = document
            stop = stop + context_length[rows.batch_index].to(stop.dtype)
        if not context.is_one_per_sentence:
            return rows.to_positions(self.embed_rows(compact, rows.batch_index, stop, end, start))
        # the same window at every position of a sentence: each distinct window is embedded once
        windows, inverse = torch.unique(torch.stack([rows.batch_index, start, stop]), dim=1, return_inverse=True)
        pooled = self.embed_rows(compact, windows[0], windows[2], end, windows[1])
        return rows.to_positions(pooled[inverse])

    def embed_texts(self, texts: list[str], tokenizer) -> torch.Tensor:
        """e for each text (a prefix given as text, e.g. when the LM's tokenizer is not the encoder's), tokenized by
        the encoder's own `tokenizer`: [CLS] + its tokens + [SEP], truncated as the token-id path truncates.
        Returns (len(texts), width)."""
        start, end = encoder_text_ends(tokenizer)
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        rows = [[start, *ids] for ids in encoded]
        lengths = torch.tensor([len(row) for row in rows])
        matrix = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long)
        for i, row in enumerate(rows):
            matrix[i, : len(row)] = torch.tensor(row)
        device = next(self.encoder.parameters()).device
        return self.embed_rows(matrix.to(device), torch.arange(len(rows), device=device), lengths.to(device), end)

    def embed_rows(self, compact, batch_index, lengths, end_token_id: int, starts=None) -> torch.Tensor:
        """Embed row r = compact[b, 0] + compact[b, starts[r]:lengths[r]] + end token (b = batch_index[r]; starts
        default to 1: the whole prefix), for all rows, in size-sorted batches of at most ENCODER_TOKENS_PER_BATCH
        padded tokens. `compact` holds encoder token ids, each row starting with the encoder's start token.
        Returns (rows, width) in the order of the rows."""
        lengths = lengths.to(torch.long)
        sizes = lengths if starts is None else lengths - starts.to(torch.long) + 1  # tokens before the end token
        order = torch.argsort(sizes, stable=True)
        widths = (sizes[order].clamp(max=self.max_length - 1) + 1).tolist()
        pooled = None
        start = 0
        while start < len(widths):
            # rows are sorted by width, so the last row of a chunk sets its padded width
            end = start + 1
            while end < len(widths) and (end - start + 1) * widths[end] <= ENCODER_TOKENS_PER_BATCH:
                end += 1
            chunk = order[start:end]
            vectors = self._embed_chunk(compact, batch_index[chunk], lengths[chunk], sizes[chunk], end_token_id)
            if pooled is None:
                pooled = vectors.new_empty(len(widths), vectors.shape[-1])
            pooled = pooled.index_copy(0, chunk, vectors)
            start = end
        return pooled

    def _embed_chunk(self, compact, batch_index, lengths, sizes, end_token_id) -> torch.Tensor:
        device = compact.device
        keep = sizes.clamp(max=self.max_length - 1)  # tokens kept before the end token
        width = int(keep.max()) + 1
        positions = torch.arange(width, device=device).unsqueeze(0)
        # Position 0 keeps the first token ([CLS]); the rest are the `keep - 1` most recent tokens of the window,
        # which ends at `lengths`. For a whole prefix without truncation the source index is just the position.
        source = torch.where(positions == 0, 0, lengths.unsqueeze(1) - keep.unsqueeze(1) + positions)
        source = source.clamp(max=compact.shape[1] - 1)
        ids = compact[batch_index].gather(1, source)
        ids = torch.where(positions == keep.unsqueeze(1), end_token_id, ids)
        mask = (positions <= keep.unsqueeze(1)).to(torch.long)
        ids = torch.where(mask.bool(), ids, getattr(self.config.encoder, "pad_token_id", None) or 0)
        return self.pool(self.encoder(input_ids=ids, attention_mask=mask), mask)

    def pool(self, outputs, mask: torch.Tensor) -> torch.Tensor:
        if self.config.encoder_pooling == "cls":
            return outputs.last_hidden_state[:, 0]
        if self.config.encoder_pooling == "last":  # the end token, which a causal encoder reads after the prefix
            last = mask.sum(1) - 1
            return outputs.last_hidden_state[torch.arange(len(last), device=last.device), last]
        if self.config.encoder_pooling == "mean":
            weights = mask.unsqueeze(-1).to(outputs.last_hidden_state.dtype)
            return (outputs.last_hidden_state * weights).sum(1) / weights.sum(1)
        pooled = getattr(outputs, "pooler_output", None)
        if pooled is None:
            raise ValueError(
                f"encoder_pooling='pooler' but the encoder ({type(self.encoder).__name__}) returns no pooler_output; "
                "use encoder_pooling='cls' or 'mean'."
            )
        return pooled


class FusionLSTMStage(nn.Module):
    """What the module of every stage (FusionSpec.stage) shares: the strategy's fusion function, the projection of
    e_j to hidden_size where the table asks for one, and the LSTM (except embedding_only's).

    forward(token_embeds, inputs, fusion_embeds, state, need_state, embed_tokens) → (fused, hidden):
        token_embeds (batch, num_new, E): the new tokens' embeddings after dropout; inputs: `SequenceSoFar`;
        fusion_embeds (batch, num_new, F) or None; state: `FusionLSTMState` or None; embed_tokens(ids): embeddings
        with dropout, for a stage that rereads the history. Returns the fused vector at each new position
        (batch, num_new, config.fused_size) and the LSTM state (h, c) after the last real token (None where the
        stage keeps none).
    """

    has_lstm = True
    # whether the next call needs the whole sequence so far (early fusion reruns the LSTM over it)
    keeps_sequence = False
    # after the dense layer: the artefact-only MLP has ReLU there, the LSTM models nothing
    dense_activation = nn.Identity

    def __init__(self, config: FusionLSTMConfig):
        super().__init__()
        self.config = config
        self.fusion_function = FUSION_FUNCTIONS[config.fusion]
        self.lstm = nn.LSTM(
            config.embedding_size,
            config.hidden_size,
            num_layers=config.num_hidden_layers,
            dropout=config.dropout if config.num_hidden_layers > 1 else 0.0,
            batch_first=True,
        ) if self.has_lstm else None
        self.fusion_projection = (
            nn.Linear(config.fusion_embedding_size, config.hidden_size) if config.needs_projection else None
        )
        self.dropout = nn.Dropout(config.dropout)  # on the LSTM output

    def project(self, fusion_embeds: torch.Tensor | None) -> torch.Tensor | None:
        if fusion_embeds is None or self.fusion_projection is None:
            return fusion_embeds
        return self.fusion_projection(fusion_embeds)


class LateFusionLSTM(FusionLSTMStage):
    """Stages none and late: the LSTM runs once over the sequence, continuing from the state, and each output h_j is
    combined with e_j (the baseline's function leaves h_j as it is)."""

    def forward(self, token_embeds, inputs, fusion_embeds, state, need_state: bool, embed_tokens):
        previous = state.hidden if state is not None else None
        if previous is None and inputs.lstm_reads_context:
            output, hidden = self.run_after_context(token_embeds, inputs, embed_tokens, need_state)
        else:
            output, hidden = self.run_sequence(token_embeds, inputs.new_mask, previous, need_state)
        fused, _ = self.fusion_function(self.dropout(output), None, self.project(fusion_embeds))
        return fused, hidden

    def run_after_context(self, token_embeds, inputs, embed_tokens, need_state: bool):
        """The LSTM over BOS, the document's previous sentences, then the sentence's tokens (context_as_tokens):
        the outputs at the sentence's positions (BOS's is the one after the context), (batch, num_new, H)."""
        mask = inputs.new_mask
        joined, context_length = join_context(compact_rows(token_embeds, mask), embed_tokens(inputs.context_input_ids),
                                              inputs.context_attention_mask)
        lengths = mask.sum(1) + context_length
        joined_mask = (torch.arange(joined.shape[1], device=joined.device).unsqueeze(0) < lengths.unsqueeze(1)).long()
        output, hidden = self.run_sequence(joined, joined_mask, None, need_state)
        # the sentence's token k (its k-th real token) sits at k + n in the joined row; BOS's output is the context's
        index = (torch.arange(mask.shape[1], device=mask.device).unsqueeze(0) + context_length.unsqueeze(1))
        index = index.clamp(max=joined.shape[1] - 1).unsqueeze(-1).expand(-1, -1, output.shape[-1])
        return scatter_to_positions(output.gather(1, index), mask), hidden

    def run_sequence(self, embeds, mask, hidden, need_state: bool):
        """LSTM over embeds (batch, n, E) from `hidden` ((h, c), each (layers, batch, H), or None).
        Padded positions (mask 0) are skipped: each row's real tokens run as one contiguous sequence."""
        if mask is None or bool(mask.all()) or (is_right_padded(mask) and not need_state):
            # right padding only follows the real tokens, so it cannot change their outputs
            return self.lstm(embeds, hidden)
        lengths = mask.sum(1)
        if bool((lengths == 0).any()) and hidden is None:
            raise ValueError("A sequence of the batch has no real token (its attention_mask is all zeros).")
        packed = pack_padded_sequence(
            compact_rows(embeds, mask), lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        output, (h, c) = self.lstm(packed, hidden)
        output, _ = pad_packed_sequence(output, batch_first=True, total_length=embeds.shape[1])
        if hidden is not None and bool((lengths == 0).any()):
            # a continuation step whose new tokens are all padding leaves that row's state as it was
            empty = (lengths == 0).view(1, -1, 1)
            h, c = torch.where(empty, hidden[0], h), torch.where(empty, hidden[1], c)
        return scatter_to_positions(output, mask), (h, c)


class EarlyFusionLSTM(FusionLSTMStage):
    """Stage early: the LSTM restarts at every position j from the state that the fusion function builds from e_j
    and runs over tokens 0..j. All prefixes of the batch are rows of one LSTM run stepped over time (work
    ~ seq_len²/2 per sequence, no Python loop over positions; see `run_rows`). With several layers, every layer
    starts from the same e_j-derived state. It keeps no recurrent state: a continuation reruns the whole prefix."""

    keeps_sequence = True

    def forward(self, token_embeds, inputs, fusion_embeds, state, need_state: bool, embed_tokens):
        embeds = embed_tokens(inputs.input_ids) if inputs.has_history else token_embeds
        rows = PrefixRows.of(inputs.attention_mask, inputs.new_mask.shape[1])
        sequences, lengths = compact_rows(embeds, inputs.attention_mask), rows.length
        if inputs.lstm_reads_context:  # each run reads BOS, the previous sentences, then tokens 1..j
            sequences, context_length = join_context(sequences, embed_tokens(inputs.context_input_ids),
                                                     inputs.context_attention_mask)
            lengths = lengths + context_length[rows.batch_index]
        projected = self.project(fusion_embeds[rows.new_mask])
        zeros = embeds.new_zeros(projected.shape[0], self.config.hidden_size)
        h0, c0 = self.fusion_function(zeros, zeros, projected)
        last = self.run_rows(sequences, rows.batch_index, lengths, h0, c0)
        return self.dropout(rows.to_positions(last)), None

    def run_rows(self, sequences, batch_index, lengths, h0, c0) -> torch.Tensor:
        """The LSTM over row r = sequences[batch_index[r], :lengths[r]] from the state (h0[r], c0[r]), for all rows
        at once; returns each row's last output (rows, H).

        The same cell as nn.LSTM (gates i, f, g, o; same weights), stepped by hand because the rows share their
        tokens: the first layer's input projection is computed once per token, not once per row, and at step t
        only the rows longer than t (a prefix of the rows sorted by length) are computed.
        """
        order = torch.argsort(lengths, descending=True, stable=True)
        lengths, batch_index = lengths[order], batch_index[order]
        width = int(lengths[0])
        active = (lengths.unsqueeze(1) > torch.arange(width, device=lengths.device)).sum(0).tolist()
        h0, c0 = h0[order], c0[order]
        layer_inputs = None
        for layer in range(self.config.num_hidden_layers):
            w_ih, w_hh = getattr(self.lstm, f"weight_ih_l{layer}"), getattr(self.lstm, f"weight_hh_l{layer}")
            bias = getattr(self.lstm, f"bias_ih_l{layer}") + getattr(self.lstm, f"bias_hh_l{layer}")
            if layer == 0:
                # (batch, width, 4H) → one (batch, 4H) tensor per step; unbind keeps the backward to one stack
                token_gates = nn.functional.linear(sequences[:, :width], w_ih, bias).unbind(1)
            h, c, outputs, finished = h0, c0, [], []
            for t, n in enumerate(active):
                if layer == 0:
                    gates = token_gates[t][batch_index[:n]]
                else:
                    gates = nn.functional.linear(layer_inputs[t], w_ih, bias)
                gates = gates + nn.functional.linear(h[:n], w_hh)
                i, f, g, o = gates.chunk(4, dim=1)
                c = torch.sigmoid(f) * c[:n] + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outputs.append(h)
                n_next = active[t + 1] if t + 1 < width else 0
                finished.append(h[n_next:])  # rows of length t + 1 end here
            if layer + 1 < self.config.num_hidden_layers and self.lstm.dropout and self.training:
                outputs = [nn.functional.dropout(x, self.lstm.dropout) for x in outputs]
            layer_inputs = outputs
        # rows ended longest-last: reverse to the sorted order, then undo the sort
        last = torch.cat(finished[::-1])
        return last.index_select(0, torch.argsort(order))


class EmbeddingOnlyMLP(FusionLSTMStage):
    """Stage alone, the artefact-only probe: no LSTM; ReLU(W₁ e_j) (W₁ the fusion projection), then the model's
    dense layer with ReLU: an MLP on e_j alone."""

    has_lstm = False
    dense_activation = nn.ReLU

    def forward(self, token_embeds, inputs, fusion_embeds, state, need_state: bool, embed_tokens):
        fused, _ = self.fusion_function(None, None, self.project(fusion_embeds))
        return fused, None


# The module of each stage of FUSIONS
FUSION_STAGES: dict[FusionStage, type[FusionLSTMStage]] = {
    FusionStage.NONE: LateFusionLSTM,
    FusionStage.LATE: LateFusionLSTM,
    FusionStage.EARLY: EarlyFusionLSTM,
    FusionStage.ALONE: EmbeddingOnlyMLP,
}


# ----------------------------------------------------------------------------------------------------------------------
# Pretrained model base
# ----------------------------------------------------------------------------------------------------------------------


class FusionLSTMPreTrainedModel(PreTrainedModel):
    config: FusionLSTMConfig
    config_class = FusionLSTMConfig
    base_model_prefix = "model"
    _is_stateful = True
    supports_gradient_checkpointing = False
    _no_split_modules = sorted({stage.__name__ for stage in FUSION_STAGES.values()})

    def _init_weights(self, module: nn.Module):
        # The encoder is a PreTrainedModel and is initialised by its own _init_weights.
        super()._init_weights(module)
        if isinstance(module, nn.LSTM):
            # PyTorch's own LSTM initialisation, U(-1/sqrt(H), 1/sqrt(H)), as the paper's code used
            bound = module.hidden_size**-0.5
            for param in module.parameters():
                init.uniform_(param, -bound, bound)

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # the recurrent state travels as `state`, not as a KV cache
        return False

    def save_pretrained(self, save_directory, *args, **kwargs):
        if self._auto_class is not None:
            # the code files serve both heads, whichever of them is saved
            module = "modeling_fusion_lstm"
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                "AutoModel": f"{module}.FusionLSTMModel",
                "AutoModelForCausalLM": f"{module}.FusionLSTMForCausalLM",
            }
        return super().save_pretrained(save_directory, *args, **kwargs)

    def set_fusion_dropout(self, rate: float | None, during_eval: bool = False):
        """The probability that e_j is dropped from now on (a schedule's current value), leaving
        config.fusion_dropout, which is saved with the model, as it is; None returns to the config's.

        Dropout acts in training only, unless `during_eval`: then in evaluation too, as the paper's code did (and
        `set_fusion_dropout(1.0, during_eval=True)` evaluates the model with every e_j zeroed)."""
        if rate is not None and not 0.0 <= rate <= 1.0:
            raise ValueError(f"fusion dropout must lie in [0, 1], got {rate}.")
        self.base_model.fusion_dropout_rate = rate
        self.base_model.fusion_dropout_during_eval = during_eval

    def num_lm_parameters(self) -> int:
        """Parameters of the language model itself: all but the prefix encoder's."""
        encoder = self.base_model.prefix_encoder
        skip = {id(p) for p in encoder.parameters()} if encoder is not None else set()
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)


# ----------------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class FusionLSTMState:
    """Recurrent state carried between calls (and between `generate` steps).

    hidden: (h, c), each (num_hidden_layers, batch, hidden_size): the LSTM state after the last real token; None for
        early fusion, which restarts the LSTM at every position.
    input_ids, attention_mask (batch, seq_len): the sequence seen so far; kept when the next positions need the
        whole prefix (the encoder's prefix embedding, early fusion), None otherwise.
    """

    hidden: tuple[torch.Tensor, torch.Tensor] | None = None
    input_ids: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None

    def index_select(self, index: torch.Tensor) -> "FusionLSTMState":
        """The state of the batch rows `index` (beam search reorders and duplicates rows)."""
        hidden = None if self.hidden is None else tuple(t.index_select(1, index.to(t.device)) for t in self.hidden)
        pick = lambda t: None if t is None else t.index_select(0, index.to(t.device))  # noqa: E731
        return FusionLSTMState(hidden, pick(self.input_ids), pick(self.attention_mask))


@dataclass
class FusionLSTMOutput(ModelOutput):
    r"""
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, projection_size)`):
        The dense layer's output after fusion, at every position (the input of the output layer).
    fusion_embeds (`torch.FloatTensor` of shape `(batch_size, sequence_length, fusion_embedding_size)`, *optional*):
        e_j used at every position (given or computed by the encoder); None for `fusion="none"`.
    state (`FusionLSTMState`, *optional*, returned when `use_cache=True` outside training):
        Pass it back with the next tokens to continue the sequence without recomputing it.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
        Token embeddings (batch, seq_len, embedding_size), fused LSTM output (batch, seq_len, hidden or
        hidden + fusion width for concat) and last_hidden_state.
    """

    last_hidden_state: torch.FloatTensor | None = None
    fusion_embeds: torch.FloatTensor | None = None
    state: FusionLSTMState | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class FusionLSTMCausalLMOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `(1,)`, *optional*, returned when `labels` is provided):
        Next-token cross-entropy, mean over labels that are not -100.
    logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`):
        Next-token scores before softmax.
    fusion_embeds, state, hidden_states: as in `FusionLSTMOutput`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    fusion_embeds: torch.FloatTensor | None = None
    state: FusionLSTMState | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


# ----------------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------------


class SequenceSoFar(NamedTuple):
    """The inputs of one forward call, with the state's history joined in.

    embeds (batch, num_new, E): embeddings of the new tokens (before dropout); new_mask (batch, num_new): their
    attention mask; input_ids, attention_mask (batch, history + num_new): the sentence so far (input_ids None when the
    model was given inputs_embeds and keeps no history); context_input_ids, context_attention_mask (batch,
    context_len): the document's previous sentences (None: none); lstm_reads_context: whether the LSTM reads them
    before the sentence (context_as_tokens), not only the encoder."""

    embeds: torch.Tensor
    new_mask: torch.Tensor
    input_ids: torch.Tensor | None
    attention_mask: torch.Tensor
    context_input_ids: torch.Tensor | None = None
    context_attention_mask: torch.Tensor | None = None
    lstm_reads_context: bool = False

    @property
    def has_history(self) -> bool:
        return self.attention_mask.shape[1] != self.new_mask.shape[1]


class FusionLSTMModel(FusionLSTMPreTrainedModel):
    """Token embedding → LSTM → fusion with e_j → dense (projection_size). The encoder, when the config has one,
    is a submodule saved with the model."""

    def __init__(self, config: FusionLSTMConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=None)
        self.dropout = nn.Dropout(config.dropout)
        # the LSTM and the fusion of e_j into it: one module per stage of the FUSIONS table
        self.recurrence = FUSION_STAGES[config.fusion_spec.stage](config)
        self.dense = nn.Linear(config.fused_size, config.projection_size)
        self.activation = self.recurrence.dense_activation()
        self.prefix_encoder = FusionLSTMPrefixEncoder(config) if config.uses_encoder else None
        # training state, not configuration: a schedule's current rate (None: config.fusion_dropout), never saved
        self.fusion_dropout_rate = None
        self.fusion_dropout_during_eval = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, new_embeddings):
        self.embeddings = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        fusion_embeds: torch.FloatTensor | None = None,
        state: FusionLSTMState | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        context_input_ids: torch.LongTensor | None = None,
        context_attention_mask: torch.LongTensor | None = None,
        **kwargs,
    ) -> tuple | FusionLSTMOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
            Token ids; with `state`, only the tokens that follow the state's sequence.
        attention_mask (`torch.LongTensor` of shape `(batch_size, sequence_length)` or, with `state`,
            `(batch_size, state_length + sequence_length)`): 1 for real tokens, 0 for padding (left or right).
            Padded positions never influence real ones.
        inputs_embeds (`torch.FloatTensor` of shape `(batch_size, sequence_length, embedding_size)`, *optional*):
            Token embeddings instead of `input_ids` (the encoder then needs `fusion_embeds`).
        fusion_embeds (`torch.FloatTensor` of shape `(batch_size, sequence_length, fusion_embedding_size)`, *optional*):
            e_j summarises tokens 0..j (precomputed prefix embeddings, or any external vector); computed by the
            encoder when absent.
        state (`FusionLSTMState`, *optional*): returned by a previous call with `use_cache=True`; the model
            continues from it.
        context_input_ids (`torch.LongTensor` of shape `(batch_size, context_length)`, *optional*): for a model
            trained with the document's previous sentences (`config.context_sentences`): those sentences, each
            followed by EOS, without BOS (padded like `attention_mask`, by `context_attention_mask`). They are
            conditioned on, never scored, and take no position of the output: the encoder reads them (fusion_context
            `previous`, `document`, `prefix+previous`) and, with `config.context_as_tokens`, the LSTM reads them
            after BOS, before the sentence. With a state: pass the same context at every step.
        context_attention_mask (`torch.LongTensor` of shape `(batch_size, context_length)`, *optional*): 1 for the
            context's real tokens, 0 for padding; all ones when absent.
        """
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        use_cache = use_cache and not self.training
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        # 1. Token embeddings of the new tokens, and the whole sequence so far (the state's history joined in)
        refuse_context_length(kwargs)
        inputs = self._sequence_so_far(input_ids, attention_mask, inputs_embeds, state, context_input_ids,
                                       context_attention_mask)
        # 2. e_j of every new position: given, or from the prefix encoder
        fusion_embeds = self._fusion_embeds(fusion_embeds, inputs)
        # 3. The LSTM and the fusion of e_j, as the strategy's stage does it: h_j combined with e_j (late), the LSTM
        #    restarted from e_j at every position (early), or e_j alone (embedding_only); then the dense layer
        token_embeds = self.dropout(inputs.embeds)
        fused, hidden = self.recurrence(token_embeds, inputs, fusion_embeds, state, use_cache, self._embed_tokens)
        last_hidden_state = self.activation(self.dense(fused))

        output = FusionLSTMOutput(
            last_hidden_state=last_hidden_state,
            fusion_embeds=fusion_embeds,
            state=self._next_state(inputs, hidden) if use_cache else None,
            hidden_states=(token_embeds, fused, last_hidden_state) if output_hidden_states else None,
        )
        return output if return_dict else output.to_tuple()

    def _embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.embeddings(input_ids))

    def _next_state(self, inputs: SequenceSoFar, hidden) -> FusionLSTMState:
        # the encoder's next e_j and early fusion's next run both read the whole prefix
        keep_sequence = self.recurrence.keeps_sequence or self.prefix_encoder is not None
        return FusionLSTMState(
            hidden=hidden,
            input_ids=inputs.input_ids if keep_sequence else None,
            attention_mask=inputs.attention_mask if keep_sequence else None,
        )

    def _check_input_ids(self, input_ids: torch.Tensor, name: str = "input_ids"):
        if input_ids.dim() != 2:
            raise ValueError(f"{name} must have shape (batch, seq_len), got {tuple(input_ids.shape)}.")
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.config.vocab_size):
            raise ValueError(
                f"{name} contain ids outside the vocabulary [0, {self.config.vocab_size}): min "
                f"{int(input_ids.min())}, max {int(input_ids.max())}. Use this model's tokenizer."
            )

    def _sequence_so_far(self, input_ids, attention_mask, inputs_embeds, state, context_input_ids,
                         context_attention_mask) -> SequenceSoFar:
        """Checks the inputs and joins the state's history (ids and mask) to the new tokens; adds the document's
        previous sentences, checked."""
        inputs = self._join_history(input_ids, attention_mask, inputs_embeds, state)
        if context_input_ids is None:
            if context_attention_mask is not None:
                raise ValueError("context_attention_mask was given without context_input_ids: pass both.")
            return inputs
        batch = inputs.new_mask.shape[0]
        if context_input_ids.dim() != 2 or context_input_ids.shape[0] != batch:
            raise ValueError(f"context_input_ids must have shape (batch, context_len) with batch = {batch}, got "
                             f"{tuple(context_input_ids.shape)}.")
        self._check_input_ids(context_input_ids, "context_input_ids")
        if context_attention_mask is None:
            context_attention_mask = torch.ones_like(context_input_ids)
        if tuple(context_attention_mask.shape) != tuple(context_input_ids.shape):
            raise ValueError(f"context_attention_mask has shape {tuple(context_attention_mask.shape)}; it must match "
                             f"context_input_ids' {tuple(context_input_ids.shape)}.")
        check_mask_values(context_attention_mask, "context_attention_mask")
        return inputs._replace(context_input_ids=context_input_ids,
                               context_attention_mask=context_attention_mask.to(torch.long),
                               lstm_reads_context=self.config.lstm_reads_context)

    def _join_history(self, input_ids, attention_mask, inputs_embeds, state) -> SequenceSoFar:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if input_ids is not None:
            self._check_input_ids(input_ids)
            inputs_embeds = self.embeddings(input_ids)
        batch, num_new = inputs_embeds.shape[:2]
        if batch == 0 or num_new == 0:
            raise ValueError(f"Got an empty batch of shape {tuple(inputs_embeds.shape[:2])}: pass at least one token.")
        if attention_mask is None:
            history = state.attention_mask.shape[1] if state is not None and state.attention_mask is not None else 0
            attention_mask = torch.ones(batch, history + num_new, dtype=torch.long, device=self.device)
        # prefix lengths come from the mask's running sum: any other value would let positions see the future
        check_mask_values(attention_mask, "attention_mask")
        attention_mask = attention_mask.to(torch.long)
        if attention_mask.shape[0] != batch or attention_mask.shape[1] < num_new:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}; expected ({batch}, {num_new}) or, with a "
                f"state, ({batch}, history + {num_new})."
            )
        new_mask = attention_mask[:, -num_new:]
        if state is None:
            if attention_mask.shape[1] != num_new:
                raise ValueError(
                    f"attention_mask has {attention_mask.shape[1]} columns for {num_new} tokens; without a state "
                    "they must match."
                )
            empty = (new_mask.sum(1) == 0).nonzero().flatten().tolist()
            if empty:
                raise ValueError(f"Sequences {empty} of the batch are empty (attention_mask all zeros).")
        if state is None or state.input_ids is None:
            return SequenceSoFar(inputs_embeds, new_mask, input_ids, new_mask)
        if input_ids is None:
            raise ValueError("Continuing from a state that keeps the sequence needs input_ids, not inputs_embeds.")
        full_ids = torch.cat([state.input_ids, input_ids], dim=1)
        return SequenceSoFar(inputs_embeds, new_mask, full_ids, torch.cat([state.attention_mask, new_mask], dim=1))

    def _fusion_embeds(self, fusion_embeds, inputs: SequenceSoFar):
        """e_j (batch, num_new, F) in the model's dtype, given or computed; in training, dropped with probability
        fusion_dropout (whole vectors or elements, per fusion_dropout_mode). None for fusion='none'."""
        if not self.config.uses_fusion:
            if fusion_embeds is not None:
                raise ValueError("fusion='none' uses no prefix embeddings: do not pass fusion_embeds to this model.")
            return None
        batch, num_new = inputs.new_mask.shape
        if fusion_embeds is not None and not isinstance(fusion_embeds, torch.Tensor):
            raise TypeError(f"fusion_embeds must be a torch.Tensor of shape (batch, seq_len, fusion_embedding_size), got "
                            f"a {type(fusion_embeds).__name__}.")
        if fusion_embeds is not None:
            expected = (batch, num_new, self.config.fusion_embedding_size)
            if fusion_embeds.dim() != 3 or tuple(fusion_embeds.shape) != expected:
                raise ValueError(
                    f"fusion_embeds must have shape (batch, seq_len, fusion_embedding_size) = {expected}, "
                    f"got {tuple(fusion_embeds.shape)}."
                )
        elif self.prefix_encoder is None:
            raise ValueError(
                f"fusion={self.config.fusion!r} needs prefix embeddings, but this model has no encoder: pass "
                "`fusion_embeds` (batch, seq_len, fusion_embedding_size) to forward, or build the model with "
                "FusionLSTMForCausalLM.from_encoder_pretrained(encoder_path)."
            )
        elif inputs.input_ids is None:
            raise ValueError("The encoder reads token ids: pass input_ids (or fusion_embeds with inputs_embeds).")
        else:
            fusion_embeds = self.prefix_encoder(inputs.input_ids, inputs.attention_mask, num_new,
                                                inputs.context_input_ids, inputs.context_attention_mask)
        fusion_embeds = fusion_embeds.to(self.dense.weight.dtype)
        rate = self.config.fusion_dropout if self.fusion_dropout_rate is None else self.fusion_dropout_rate
        if rate > 0 and (self.training or self.fusion_dropout_during_eval):
            if self.config.fusion_dropout_mode == "element":
                # the paper's code: elements dropped, the rest rescaled by 1 / (1 - rate)
                return nn.functional.dropout(fusion_embeds, rate, training=True)
            # whole vectors, not rescaled: the LM must also work from the tokens alone
            keep = torch.rand(batch, num_new, 1, device=fusion_embeds.device) >= rate
            fusion_embeds = fusion_embeds * keep.to(fusion_embeds.dtype)
        return fusion_embeds


class FusionLSTMForCausalLM(FusionLSTMPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embeddings.weight"}

    def __init__(self, config: FusionLSTMConfig):
        super().__init__(config)
        self.model = FusionLSTMModel(config)
        self.lm_head = nn.Linear(config.projection_size, config.vocab_size)
        self.post_init()

    @property
    def prefix_encoder(self) -> FusionLSTMPrefixEncoder | None:
        """The encoder of prefixes (None without fusion or without an encoder), as on FusionLSTMModel."""
        return self.model.prefix_encoder

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    @classmethod
    def from_encoder_pretrained(cls, encoder_name_or_path=None, **kwargs) -> "FusionLSTMForCausalLM":
        """A fresh LSTM LM around a pretrained encoder; keyword arguments set config fields.

        The LM's vocabulary is the encoder tokenizer's: [CLS] acts as BOS, [SEP] as EOS, [PAD] pads.
        `encoder_name_or_path` defaults to the embedded MiniLM (all-MiniLM-L6-v2); any AutoModel encoder
        directory or Hub id works the same way.
        """
        from .tokenization_fusion_lstm import default_encoder_path, load_tokenizer

        encoder_name_or_path = str(encoder_name_or_path or default_encoder_path())
        tokenizer = load_tokenizer(encoder_name_or_path)
        encoder = AutoModel.from_pretrained(encoder_name_or_path)
        config_kwargs = {
            "vocab_size": len(tokenizer),
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            **kwargs,
        }
        config = FusionLSTMConfig(**config_kwargs)
        if config.uses_fusion:
            config = FusionLSTMConfig(**config_kwargs, encoder=encoder.config)
        model = cls(config)
        if model.prefix_encoder is not None:
            # loading into the existing parameters keeps their freeze
            model.prefix_encoder.encoder.load_state_dict(encoder.state_dict())
        return model

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        fusion_embeds: torch.FloatTensor | None = None,
        state: FusionLSTMState | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        token_type_ids: torch.LongTensor | None = None,
        context_input_ids: torch.LongTensor | None = None,
        context_attention_mask: torch.LongTensor | None = None,
        **kwargs,
    ) -> tuple | FusionLSTMCausalLMOutput:
        r"""
        Arguments as in `FusionLSTMModel.forward`, plus:
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Usually the input ids: the shift happens inside; -100 is ignored.
        logits_to_keep (`int` or `torch.Tensor`): compute logits only for the last `logits_to_keep` positions
            (0: all), as `generate` does.
        token_type_ids: accepted and ignored, so that a BERT tokenizer's output can be passed as is.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        refuse_context_length(kwargs)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            fusion_embeds=fusion_embeds,
            state=state,
            context_input_ids=context_input_ids,
            context_attention_mask=context_attention_mask,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        output = FusionLSTMCausalLMOutput(
            loss=loss,
            logits=logits,
            fusion_embeds=outputs.fusion_embeds,
            state=outputs.state,
            hidden_states=outputs.hidden_states,
        )
        return output if return_dict else output.to_tuple()

    def generate(self, *args, **kwargs):
        refuse_context_length(kwargs)
        if self.config.uses_fusion and self.prefix_encoder is None:
            raise ValueError(
                f"generate() needs e_j of every new token, and this model (fusion={self.config.fusion!r}) has no encoder "
                "to compute them: build it with FusionLSTMForCausalLM.from_encoder_pretrained(encoder_path), or decode "
                "step by step, calling the model with `fusion_embeds` for each new position and `state`."
            )
        return super().generate(*args, **kwargs)

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, is_encoder_decoder=False, num_new_tokens=1):
        # non-standard cache name, carried like RWKV's
        if "state" in outputs:
            model_kwargs["state"] = outputs.state
        return super()._update_model_kwargs_for_generation(outputs, model_kwargs, is_encoder_decoder, num_new_tokens)

    def _reorder_cache(self, state: FusionLSTMState, beam_idx: torch.Tensor) -> FusionLSTMState:
        return state.index_select(beam_idx)


__all__ = ["FusionLSTMForCausalLM", "FusionLSTMModel", "FusionLSTMPreTrainedModel", "FusionLSTMState", "PrefixContext"]
