"""How surprisal reads each family of causal LM: one reader per family behind one interface, `ModelReader`.

A reader knows how many positions its model takes, how many of a document's previous sentences it reads, how a
sentence after its context becomes the model's input, and what the model needs beside the token ids. The scorer
(surprisal.py) is the same for every family; a new family is a class here and its entry in READERS.
"""

from dataclasses import dataclass
from typing import ClassVar, Protocol

from fusion_lstm_data.batches import known_ends
from fusion_lstm_data.documents import encode_context

from .sentences import Sentence, align


@dataclass
class Encoded:
    """One sentence as the model reads it: ids (BOS, for a causal LM the context, the sentence's tokens), the word of
    each of the sentence's tokens, each token's end offset in `text` (for prefixes embedded from text), how many
    context tokens follow BOS in ids, and the text of ids; for a fusion model, the context as its own tokens
    (`context_ids`, None: read sentence by sentence) and text."""

    sentence: Sentence
    ids: list[int]
    owners: list[int]
    ends: list[int]
    context_tokens: int
    text: str
    context_ids: list[int] | None = None
    context_text: str = ""

    @property
    def first_scored(self) -> int:
        """The index in `ids` of the sentence's first token."""
        return 1 + self.context_tokens


class ModelReader(Protocol):
    """What the scorer asks of a model family. The class methods read only the config, so that a command checks its
    arguments before it loads any weights."""

    @classmethod
    def window(cls, config) -> int | None:
        """How many tokens the model takes at once (None: any number, e.g. an LSTM)."""

    @classmethod
    def trained_context(cls, config) -> int:
        """How many previous sentences the model was trained with (0: sentence by sentence, or any text)."""

    @classmethod
    def check_context(cls, config, context_sentences: int | str | None) -> None:
        """Refuses a number of previous sentences (or "all") the model cannot read, naming what it can."""

    @classmethod
    def needs_encoder_tokenizer(cls, config) -> bool:
        """Whether the model embeds text with its encoder's own tokenizer (load it beside the model)."""

    @classmethod
    def reads_every_prefix(cls, config) -> bool:
        """Whether a row of n tokens costs about n²/2 token reads (a fusion model's encoder reads every prefix) rather
        than n."""

    def encode(self, sentence: Sentence, context: list[Sentence]) -> Encoded:
        """The model's input for `sentence` after `context` (the previous sentences of its document)."""

    def features(self, items: list[Encoded], rows: list[list[int]]) -> list[dict]:
        """The collator's features of each row of token ids (a piece of items[i].ids) with what else the model
        reads."""


class CausalLM:
    """Any transformers causal LM with a fast tokenizer: the context is text before the sentence, in the same row (its
    tokens are conditioned on, not scored), and a model of limited positions reads a long row in windows."""

    POSITION_FIELDS: ClassVar[tuple[str, ...]] = ("max_position_embeddings", "n_positions", "max_sequence_length")

    def __init__(self, model, tokenizer, encoder_tokenizer=None):
        self.model, self.tokenizer = model, tokenizer

    @classmethod
    def window(cls, config) -> int | None:
        for name in cls.POSITION_FIELDS:
            value = getattr(config, name, None)
            if isinstance(value, int):
                return value
        return None

    @classmethod
    def trained_context(cls, config) -> int:
        return 0

    @classmethod
    def reads_every_prefix(cls, config) -> bool:
        return False

    @classmethod
    def check_context(cls, config, context_sentences: int | str | None) -> None:
        return None  # reads whatever text it is given

    @classmethod
    def needs_encoder_tokenizer(cls, config) -> bool:
        return False

    def encode(self, sentence: Sentence, context: list[Sentence]) -> Encoded:
        if not context:
            return self.encode_alone(sentence)
        return self.encode_after_text(sentence, " ".join(c.text for c in context))

    def encode_alone(self, sentence: Sentence) -> Encoded:
        """BOS and the sentence's tokens."""
        encoded = self.tokenizer(sentence.text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = [tuple(o) for o in encoded["offset_mapping"]]
        ids = [self.tokenizer.bos_token_id, *encoded["input_ids"]]
        return Encoded(sentence, ids, align(sentence, offsets), [0, *known_ends(offsets)], 0, sentence.text)

    def encode_after_text(self, sentence: Sentence, context_text: str) -> Encoded:
        """BOS, then the context and the sentence tokenized as one text (so that the sentence's first token is the one
        that follows a space, as inside a story); the sentence's tokens are those that start after the context."""
        text = f"{context_text} {sentence.text}"
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        shift = len(context_text) + 1
        context_tokens = sum(1 for start, _ in encoded["offset_mapping"] if start < shift - 1)
        own = [(max(start - shift, 0), end - shift) for start, end in encoded["offset_mapping"][context_tokens:]]
        ids = [self.tokenizer.bos_token_id, *encoded["input_ids"]]
        return Encoded(sentence, ids, align(sentence, own), [0, *known_ends(encoded["offset_mapping"])],
                       context_tokens, text)

    def features(self, items: list[Encoded], rows: list[list[int]]) -> list[dict]:
        return [{"input_ids": row} for row in rows]


class FusionLM(CausalLM):
    """This project's fusion LSTM LMs: no window (an LSTM reads any length); the document's previous sentences, as
    many as the model was trained with or fewer, travel as their own tokens (`context_input_ids`), exactly as in
    training; a model whose vocabulary is not its encoder's (a BPE) embeds each prefix from its text, with the
    encoder's tokenizer, as training did."""

    def __init__(self, model, tokenizer, encoder_tokenizer=None):
        super().__init__(model, tokenizer)
        self.embedder = None
        config = model.config
        if config.uses_fusion and not config.encoder_reads_lm_ids:
            if encoder_tokenizer is None:
                raise ValueError("This fusion model's vocabulary is not its encoder's: pass the encoder's tokenizer "
                                 "(--encoder_name_or_path) to embed the prefixes from text.")
            encoder_vocabulary = getattr(config.encoder, "vocab_size", None)
            if encoder_vocabulary is not None and len(encoder_tokenizer) > encoder_vocabulary:
                raise ValueError(f"The encoder tokenizer ({type(encoder_tokenizer).__name__}, {len(encoder_tokenizer)} "
                                 f"tokens) is not this model's encoder's ({encoder_vocabulary} tokens): pass the "
                                 "encoder the model was trained with as --encoder_name_or_path.")
            from fusion_lstm_data.embedder import PrefixEmbedder

            self.embedder = PrefixEmbedder(model.prefix_encoder, tokenizer, encoder_tokenizer)

    @classmethod
    def window(cls, config) -> int | None:
        return None

    @classmethod
    def trained_context(cls, config) -> int:
        return config.context_sentences

    @classmethod
    def reads_every_prefix(cls, config) -> bool:
        return config.uses_fusion

    @classmethod
    def check_context(cls, config, context_sentences: int | str | None) -> None:
        """Any K' ≤ K of the K previous sentences the model was trained with (fewer is what it saw at the start of
        every document, and 0 is the same model without the story)."""
        trained = cls.trained_context(config)
        if context_sentences is None or (context_sentences != "all" and context_sentences <= trained):
            return
        if not trained:
            raise ValueError(f"This fusion model was trained sentence by sentence (context_sentences=0), so it cannot "
                             f"read {context_sentences} previous sentences: score it without --context_sentences.")
        raise ValueError(f"This fusion model was trained with context_sentences={trained}: it reads at most that many "
                         f"previous sentences, not {context_sentences} (--context_sentences 0 to {trained}).")

    @classmethod
    def needs_encoder_tokenizer(cls, config) -> bool:
        return config.uses_fusion

    def encode(self, sentence: Sentence, context: list[Sentence]) -> Encoded:
        encoded = self.encode_alone(sentence)
        if not context:
            return encoded
        row = encode_context([c.text for c in context], self.tokenizer, self.model.config.max_context_length,
                             with_text=True)
        encoded.context_ids, encoded.context_text = row["context_input_ids"], row["context_text"]
        return encoded

    def features(self, items: list[Encoded], rows: list[list[int]]) -> list[dict]:
        features = super().features(items, rows)
        with_context = any(item.context_ids is not None for item in items)
        if with_context:  # the rows are whole sentences (no window)
            for feature, item in zip(features, items):
                feature["context_input_ids"] = item.context_ids or []
        if self.embedder is not None:
            batch = {"text": [item.text for item in items], "offsets": [item.ends for item in items]}
            if with_context:
                batch["context_text"] = [item.context_text for item in items]
            for feature, vectors in zip(features, self.embedder(batch)["fusion_embeds"]):
                feature["fusion_embeds"] = vectors
        return features


# The reader of each model_type; any other causal LM is read as `CausalLM`.
READERS: dict[str, type[ModelReader]] = {"fusion_lstm": FusionLM}


def reader_class(config) -> type[ModelReader]:
    """The reader of a model of this config."""
    return READERS.get(getattr(config, "model_type", None), CausalLM)


def reader_for(model, tokenizer, encoder_tokenizer=None) -> ModelReader:
    return reader_class(model.config)(model, tokenizer, encoder_tokenizer)
