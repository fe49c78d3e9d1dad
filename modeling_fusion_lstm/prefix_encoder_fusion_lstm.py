"""The prefix encoder of FusionLSTM: which tokens the pretrained encoder reads at each position j (`EncoderWindow`,
the windows of every `fusion_context`) and the module that runs the encoder on those windows and pools each into one
vector e_j (`FusionLSTMPrefixEncoder`). modeling_fusion_lstm.py fuses e_j into the LSTM."""

from typing import NamedTuple

import torch
from torch import nn
from transformers import AutoModel

from .configuration_fusion_lstm import CONTEXTS, FusionLSTMConfig


# Encoder rows of similar length are batched together up to this many tokens (rows × padded width), which
# bounds the encoder's activation memory without paying for one call per prefix.
ENCODER_TOKENS_PER_BATCH = 2048


def compact_rows(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Move each row's real entries (mask 1) to the front, in order; padding goes behind them.

    values (batch, seq_len, ...) and mask (batch, seq_len) → (batch, seq_len, ...). With right padding this is the
    identity, with left padding it turns the batch into a right-padded one.
    """
    order = torch.argsort((mask == 0).to(torch.int8), dim=1, stable=True)
    if values.dim() > 2:
        order = order.view(*order.shape, *([1] * (values.dim() - 2))).expand_as(values)
    return values.gather(1, order)


def join_context(compact: torch.Tensor, context: torch.Tensor,
                 context_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's context put right after its first token. compact (batch, seq_len, ...) holds each row's real entries
    left-aligned (`compact_rows`); context (batch, context_len, ...) the document's previous sentences, real where
    context_mask (batch, context_len) is 1. Returns the joined rows (batch, seq_len + context_len, ...):
    compact[b, 0], the n_b real context entries, compact[b, 1:], left-aligned, then padding (whatever lay behind: mask
    it); and n (batch,), each row's context length."""
    context_tokens = context_mask.sum(1).to(compact.device)
    width = compact.shape[1]
    joined = torch.cat([compact, compact_rows(context, context_mask)], dim=1)
    position = torch.arange(joined.shape[1], device=joined.device).unsqueeze(0)
    n = context_tokens.unsqueeze(1)
    source = torch.where(position == 0, 0, torch.where(position <= n, width + position - 1, position - n))
    source = source.clamp(max=joined.shape[1] - 1)
    if joined.dim() > 2:
        source = source.view(*source.shape, *([1] * (joined.dim() - 2))).expand(-1, -1, *joined.shape[2:])
    return joined.gather(1, source), context_tokens


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


class EncoderWindow(NamedTuple):
    """What the encoder reads at position j (its window; the config field keeps its saved name, `fusion_context`;
    "context" alone means the document's previous sentences): the one rule of `fusion_context`, used by the in-model encoder (token
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
    def of(cls, config: FusionLSTMConfig) -> "EncoderWindow":
        return cls(config.fusion_context, config.fusion_context_fraction)

    @property
    def parts(self) -> tuple["EncoderWindow", ...]:
        """The single-window contexts whose vectors make e_j, one after another (just this one, but for a join)."""
        return tuple(EncoderWindow(mode, self.fraction) for mode in CONTEXTS[self.mode].parts)

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
        return f"{self.mode}{self.fraction!r}" if CONTEXTS[self.mode].reads_fraction else self.mode

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


def token_id_problem(config: FusionLSTMConfig) -> str | None:
    """Why the encoder cannot read the LM's token ids (None: it can)."""
    if not config.encoder_reads_lm_ids:
        return (f"This model's vocabulary ({config.vocab_size} tokens) is not its encoder's "
                f"({getattr(config.encoder, 'vocab_size', None)}), so the encoder cannot read the LM's token ids: pass "
                "precomputed `fusion_embeds` instead.")
    if config.eos_token_id is None:
        return "FusionLSTMConfig.eos_token_id (the encoder's end token, e.g. [SEP]) must be set."
    return None


class TextPrefixes:
    """e_j of the new positions during generation, for a model whose vocabulary its encoder cannot read (a trained
    BPE): each prefix decoded to text by the LM's `tokenizer` and embedded from that text by the encoder's own
    `encoder_tokenizer`, as training embedded it (tokens 0..j; BOS the empty text; a character whose bytes are not all
    generated yet stays out). For the prefix window only: the other windows read text that generation has not made
    yet, or the document's previous sentences."""

    def __init__(self, prefix_encoder: "FusionLSTMPrefixEncoder", tokenizer, encoder_tokenizer):
        config = prefix_encoder.config
        if prefix_encoder.context.mode != "prefix" or config.context_sentences:
            raise ValueError(f"generate() embeds each new prefix from its text only for fusion_context='prefix' without "
                             f"context sentences; this model has fusion_context={config.fusion_context!r} and "
                             f"context_sentences={config.context_sentences}: decode step by step with `fusion_embeds`.")
        if tokenizer is None or encoder_tokenizer is None:
            raise ValueError(f"This model's vocabulary ({config.vocab_size} tokens) is not its encoder's, so generate() "
                             "embeds each new prefix from its text: pass tokenizer=<the model's tokenizer> and "
                             "encoder_tokenizer=AutoTokenizer.from_pretrained(<the encoder's folder>) to generate().")
        encoder_text_ends(encoder_tokenizer)  # checked before the first step
        self.prefix_encoder, self.tokenizer, self.encoder_tokenizer = prefix_encoder, tokenizer, encoder_tokenizer

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, num_new: int) -> torch.Tensor:
        """(batch, num_new, width): e_j of the last `num_new` positions of each row of `input_ids` (the whole sequence
        so far, padded as `attention_mask` says; a padded position gets the empty text, and is never read)."""
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        texts = []
        for row, real in zip(input_ids.tolist(), mask.tolist()):
            for position in range(len(row) - num_new, len(row)):
                tokens = [t for t, m in zip(row[: position + 1], real[: position + 1]) if m]
                text = self.tokenizer.decode(tokens, skip_special_tokens=True) if real[position] else ""
                texts.append(text.rstrip("\ufffd").strip())  # a byte token's character is not complete yet
        vectors = self.prefix_encoder.embed_texts(texts, self.encoder_tokenizer)
        return vectors.view(input_ids.shape[0], num_new, -1)


class FusionLSTMPrefixEncoder(nn.Module):
    """Runs the pretrained masked-LM encoder on prefixes and pools each into one vector e_j.

    The LM shares the encoder's vocabulary: the prefix of position j is [tokens 0..j] + the end token (the LM's EOS,
    the encoder's [SEP]), so with BOS = [CLS] it is exactly what the encoder saw in pre-training. Prefixes longer
    than the encoder's maximum keep their first token ([CLS]) and their most recent tokens.

    Which tokens of the prefix it reads is `EncoderWindow`'s rule (config.fusion_context). This module owns the
    encoder's freezing: with `config.freeze_encoder` the encoder has no gradients and stays in eval mode
    (deterministic e_j) whatever mode the LM is in.
    """

    def __init__(self, config: FusionLSTMConfig):
        super().__init__()
        self.config = config
        self.context = EncoderWindow.of(config)
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

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_new: int,
                context_input_ids: torch.Tensor | None = None, context_attention_mask: torch.Tensor | None = None,
                context: EncoderWindow | None = None) -> torch.Tensor:
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

    def _embed_window(self, context: EncoderWindow, compact, document, attention_mask, num_new):
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
            compact, context_tokens = document
            stop = stop + context_tokens[rows.batch_index].to(stop.dtype)
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


__all__ = ["CONTEXT_WINDOWS", "FusionLSTMPrefixEncoder", "EncoderWindow", "PrefixRows", "TextPrefixes",
           "compact_rows", "encoder_text_ends", "join_context"]
