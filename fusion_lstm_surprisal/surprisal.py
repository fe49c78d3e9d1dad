"""Word surprisal from a causal LM: this project's fusion models or any transformers causal LM with a fast tokenizer.

A word is a whitespace-separated word of the input exactly as given (punctuation stays on its word). Its surprisal
is the sum over its tokens of -log2 p(token | the tokens before it in the sentence), the sentence starting with BOS.
Tokens are mapped to words by the fast tokenizer's character offsets, so every word gets a surprisal (also one that
becomes [UNK] or several tokens); a token that spans two words is an error that names the sentence.
"""

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fusion_lstm_training.data import FusionDataCollator


# Natural Stories: a sentence ends at a word ending in "." or "?", unless the word is a title (438 sentences)
SENTENCE_END = (".", "?")
TITLES = ("Mr.", "Mrs.", "Ms.", "Dr.", "St.", "Jr.", "Sr.", "Prof.")


@dataclass
class Sentence:
    """One sentence of the input: its id, its words, and where it came from (for error messages)."""

    id: str
    words: list[str]
    source: str

    @property
    def text(self) -> str:
        return " ".join(self.words)

    def spans(self) -> list[tuple[int, int]]:
        """Each word's [start, end) in `text`."""
        spans, start = [], 0
        for word in self.words:
            spans.append((start, start + len(word)))
            start += len(word) + 1
        return spans


@dataclass
class WordSurprisal:
    sentence: str
    word_index: int
    word: str
    surprisal: float  # bits
    tokens: int


def read_sentences_of_words(path: str, word_column: str = "word", sentence_column: str | None = None
                            ) -> list[Sentence]:
    """Sentences of a text file (one sentence a line, words split on whitespace) or of a TSV with a word column
    (words in order; sentences by `sentence_column`, else ending at a word that ends in "." or "?" and is not a
    title such as "Mr.")."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"Input file {path} does not exist.")
    text = file.read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError(f"Input file {path} is empty.")
    if file.suffix.lower() not in (".tsv", ".tab"):
        sentences = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                sentences.append(Sentence(str(len(sentences) + 1), line.split(), f"{path}:{number}"))
        return sentences
    rows = list(csv.DictReader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))
    columns = list(rows[0]) if rows else text.splitlines()[0].split("\t")
    for column in filter(None, (word_column, sentence_column)):
        if column not in columns:
            raise ValueError(f"{path} has no column {column!r} (columns: {', '.join(columns)}); choose the word "
                             "column with --word_column (and the sentence column with --sentence_column).")
    if not rows:
        raise ValueError(f"Input file {path} has a header but no rows.")
    sentences, words, first_line, sentence_id = [], [], 2, None
    for number, row in enumerate(rows, 2):  # line 1 is the header
        word = (row[word_column] or "").strip()
        if not word or len(word.split()) != 1:
            raise ValueError(f"{path}:{number}: the {word_column!r} column must hold one word, got {word!r}.")
        if sentence_column and words and row[sentence_column] != sentence_id:
            sentences.append(Sentence(sentence_id, words, f"{path}:{first_line}"))
            words, first_line = [], number
        sentence_id = row[sentence_column] if sentence_column else str(len(sentences) + 1)
        words.append(word)
        if not sentence_column and word.endswith(SENTENCE_END) and word not in TITLES:
            sentences.append(Sentence(sentence_id, words, f"{path}:{first_line}"))
            words, first_line = [], number + 1
    if words:
        sentences.append(Sentence(sentence_id if sentence_column else str(len(sentences) + 1), words,
                                  f"{path}:{first_line}"))
    return sentences


def align(sentence: Sentence, offsets: list[tuple[int, int]]) -> list[int]:
    """The word of each token, from the tokens' character offsets in sentence.text. The space before a word belongs
    to that word (byte-level BPEs put it on the word's first token); a token across two words is an error."""
    last_word = len(sentence.words) - 1
    owner_of_char = []  # the word of each character of the text; a space goes with the word after it
    for index, word in enumerate(sentence.words):
        owner_of_char += [index] * len(word) + [min(index + 1, last_word)]
    owners = []
    for start, end in offsets:
        first = owner_of_char[min(start, len(owner_of_char) - 1)]
        last = owner_of_char[min(max(end - 1, start), len(owner_of_char) - 1)]
        if first != last:
            raise ValueError(f"{sentence.source}: a token (characters {start}-{end}, {sentence.text[start:end]!r}) "
                             f"spans two words of {sentence.text!r}.")
        owners.append(first)
    missing = sorted(set(range(len(sentence.words))) - set(owners))
    if missing:
        raise ValueError(f"{sentence.source}: the tokenizer produced no token for the word(s) "
                         f"{[sentence.words[i] for i in missing]} of {sentence.text!r}.")
    return owners


def max_tokens(model) -> int | None:
    """How many tokens the model can take at once (None: no limit, e.g. an LSTM)."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(model.config, name, None)
        if isinstance(value, int) and model.config.model_type != "fusion_lstm":
            return value
    return None


class SurprisalScorer:
    """Scores sentences with `model` and its fast `tokenizer`. For a fusion model whose vocabulary is not its
    encoder's (a BPE), `encoder_tokenizer` embeds each prefix from its text, as training did."""

    def __init__(self, model, tokenizer, encoder_tokenizer=None, batch_size: int = 16, device: str | None = None):
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"The tokenizer of this model ({type(tokenizer).__name__}) is not a fast tokenizer, so "
                             "it has no character offsets to map tokens to words; load it with use_fast=True.")
        if tokenizer.bos_token_id is None:
            raise ValueError("The tokenizer has no BOS token: surprisal needs every sentence to start with one.")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.limit = max_tokens(model)
        self.embedder = None
        if getattr(model.config, "model_type", None) == "fusion_lstm" and model.config.uses_fusion:
            if not model.config.encoder_reads_lm_ids:
                if encoder_tokenizer is None:
                    raise ValueError("This fusion model's vocabulary is not its encoder's: pass the encoder's "
                                     "tokenizer (--encoder_name_or_path) to embed the prefixes from text.")
                from fusion_lstm_training.embeddings import PrefixEmbedder

                self.embedder = PrefixEmbedder(model.prefix_encoder, tokenizer, encoder_tokenizer)

    def encode(self, sentence: Sentence) -> tuple[list[int], list[int], list[int]]:
        """BOS + the sentence's tokens; the word of each token (after BOS); each token's end offset (BOS: 0)."""
        encoded = self.tokenizer(sentence.text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = [tuple(o) for o in encoded["offset_mapping"]]
        ids = [self.tokenizer.bos_token_id, *encoded["input_ids"]]
        if self.limit is not None and len(ids) > self.limit:
            raise ValueError(f"{sentence.source}: the sentence has {len(ids)} tokens with BOS, more than the model "
                             f"takes ({self.limit}); split it.")
        return ids, align(sentence, offsets), [0, *(end for _, end in offsets)]

    @torch.inference_mode()
    def token_surprisals(self, batch: list[tuple[Sentence, list[int], list[int]]]) -> list[torch.Tensor]:
        """-log2 p(token_j | tokens < j) for the tokens after BOS of each sentence: (len(ids) - 1,) each."""
        lengths = [len(ids) for _, ids, _ in batch]
        features = [{"input_ids": ids} for _, ids, _ in batch]
        if self.embedder is not None:
            vectors = self.embedder({"text": [s.text for s, _, _ in batch], "offsets": [e for _, _, e in batch]})
            for feature, v in zip(features, vectors["fusion_embeds"]):
                feature["fusion_embeds"] = v
        # padded as in training: right, with the pad id, and zero vectors at padded positions
        padded = FusionDataCollator(pad_token_id=self.tokenizer.pad_token_id or 0)(features)
        inputs = {k: v.to(self.device) for k, v in padded.items() if k != "labels"}
        input_ids = inputs["input_ids"]
        logits = self.model(**inputs).logits.float()
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:].unsqueeze(-1))
        bits = (-logprobs.squeeze(-1) / math.log(2)).cpu()
        return [bits[row, : length - 1] for row, length in enumerate(lengths)]

    def score(self, sentences: list[Sentence], progress: bool = True) -> list[WordSurprisal]:
        """One row per word of `sentences`, in order."""
        encoded = [(s, *self.encode(s)) for s in sentences]  # every sentence is checked before any is scored
        # batches of similar length waste little padding; the rows go back to the input order below
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][1]))
        per_sentence = {}
        for start in tqdm(range(0, len(order), self.batch_size), desc="Surprisal", disable=not progress,
                          unit="batch"):
            chunk = order[start : start + self.batch_size]
            batch = [(encoded[i][0], encoded[i][1], encoded[i][3]) for i in chunk]
            for i, bits in zip(chunk, self.token_surprisals(batch)):
                per_sentence[i] = bits
        rows = []
        for i, (sentence, _, owners, _) in enumerate(encoded):
            totals, counts = [0.0] * len(sentence.words), [0] * len(sentence.words)
            for owner, value in zip(owners, per_sentence[i].tolist()):
                totals[owner] += value
                counts[owner] += 1
            rows += [WordSurprisal(sentence.id, j, word, totals[j], counts[j]) for j, word in enumerate(sentence.words)]
        return rows


def write_tsv(rows: list[WordSurprisal], path: str | Path):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n")
        writer.writerow(["sentence", "word_index", "word", "surprisal", "tokens"])
        for row in rows:
            writer.writerow([row.sentence, row.word_index, row.word, f"{row.surprisal:.6f}", row.tokens])
