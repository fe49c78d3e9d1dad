"""Word surprisal from a causal LM: this project's fusion models or any transformers causal LM with a fast tokenizer.

A word is a whitespace-separated word of the input exactly as given (punctuation stays on its word). Its surprisal
is the sum over its tokens of -log2 p(token | the tokens before it in the sentence), the sentence starting with BOS.
Tokens are mapped to words by the fast tokenizer's character offsets, so every word gets a surprisal (also one that
becomes [UNK] or several tokens); a token that spans two words is an error that names the sentence.
"""

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fusion_lstm_data.batches import FusionDataCollator
from fusion_lstm_data.documents import previous_sentences

from .readers import Encoded, reader_for
from .sentences import Sentence, WordSurprisal
from .word_boundary import word_begin_ids, word_start_ids


logger = logging.getLogger(__name__)
# a model without a window reads a sentence at once: its logits alone take tokens × vocabulary × 4 bytes
MAX_UNWINDOWED_TOKENS = 4096
# a row longer than this, for a model that reads every prefix, is announced with its share of the work
LONG_ROW_TOKENS = 256
# a word drawn for the sampled entropy is cut after this many tokens (its probability so far kept)
SAMPLED_WORD_TOKENS = 8


def given_word_begins(logprobs: torch.Tensor, begins: torch.Tensor) -> torch.Tensor:
    """log p(token | a new word begins) over the word-initial tokens `begins` (ids; word_boundary.word_begin_ids):
    the next-token log-probabilities of those tokens, renormalized over them. Shape (..., len(begins))."""
    allowed = logprobs.index_select(-1, begins)
    return allowed - allowed.logsumexp(-1, keepdim=True)


def check_stride(window: int | None, stride: int | None) -> int | None:
    """The stride of a model of `window` positions: as given, or half the window (None: it reads any length)."""
    if window is None:
        return None  # reads any length at once (an LSTM): no windows
    if window < 2:
        raise ValueError(f"The model takes {window} position(s): too few to score a token after another.")
    stride = window // 2 if stride is None else stride
    if not 1 <= stride < window:
        raise ValueError(f"--stride must be at least 1 and less than the model's window ({window} positions), so "
                         f"that every token keeps window - stride tokens before it; got {stride}.")
    return stride


def sliding_windows(length: int, first: int, window: int | None, stride: int | None) -> list[tuple[int, int, int]]:
    """The pieces that score tokens first..length-1 of a sequence of `length` tokens with a model of `window`
    positions: (start, stop, first scored) of each, the model reading tokens start..stop-1. One piece when the
    sequence fits; otherwise windows `stride` tokens apart (as Oh & Schuler's scripts and the transformers perplexity
    guide), each scoring the tokens the one before did not reach: every token is scored once, with at least
    window - stride tokens before it. Windows that would score nothing (all context) are skipped."""
    if window is None or length <= window:
        return [(0, length, first)]
    pieces, scored, start = [], first, 0
    while scored < length:
        stop = min(start + window, length)
        if stop > scored:
            pieces.append((start, stop, scored))
            scored = stop
        start += stride
    return pieces


@dataclass
class Piece:
    """A part of one encoded sentence that the model reads in one row: tokens start..stop-1 of `item.ids`, scoring
    tokens first..stop-1."""

    item: int
    start: int
    stop: int
    first: int


@dataclass
class TokenScores:
    """For a piece's scored tokens: -log2 p(token | what the piece holds before it) and, with the leading-space
    correction, -log2 B after each of them and before the first."""

    bits: torch.Tensor
    after: torch.Tensor | None = None
    before: float | None = None
    # bits, of the distribution each scored token was drawn from: conditioned on a new word beginning (renormalized
    # over word_begin_ids), and not conditioned (a sentence's first word: whatever token begins it)
    entropy: torch.Tensor | None = None
    entropy_unconditioned: torch.Tensor | None = None


class SurprisalScorer:
    """Scores sentences with `model` and its fast `tokenizer`. For a fusion model whose vocabulary is not its
    encoder's (a BPE), `encoder_tokenizer` embeds each prefix from its text, as training did. A model with a limited
    number of positions reads a longer input in sliding windows `stride` tokens apart (default: half its positions).
    `bow_correction`: add the leading-space correction (word_boundary.py) to every word. `entropy`: also the entropy,
    in bits, of the distribution of the token that begins each word, given that a new word begins there (the
    next-token distribution renormalized over word_begin_ids; a sentence's first word: not conditioned). It is still
    not the next-word entropy: a word of several tokens has uncertainty beyond its first (docs/surprisal.md)."""

    def __init__(self, model, tokenizer, encoder_tokenizer=None, batch_size: int = 16, device: str | None = None,
                 stride: int | None = None, bow_correction: bool = False, entropy: bool = False,
                 entropy_samples: int = 0, entropy_seed: int = 0):
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"The tokenizer of this model ({type(tokenizer).__name__}) is not a fast tokenizer, so "
                             "it has no character offsets to map tokens to words; load it with use_fast=True.")
        if tokenizer.bos_token_id is None:
            raise ValueError("The tokenizer has no BOS token: surprisal needs every sentence to start with one.")
        self.device = checked_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.reader = reader_for(self.model, tokenizer, encoder_tokenizer)
        self.window = self.reader.window(model.config)
        self.reads_every_prefix = self.reader.reads_every_prefix(model.config)  # a row of n tokens costs n(n+1)/2
        self.stride = check_stride(self.window, stride)
        self.word_starts = word_start_ids(tokenizer) if bow_correction else None
        self.word_start_set = set(self.word_starts.tolist()) if bow_correction else set()
        self.entropy = entropy or bool(entropy_samples)
        self.word_begins = word_begin_ids(tokenizer) if self.entropy else None
        self.entropy_samples, self.entropy_seed = entropy_samples, entropy_seed
        if entropy_samples:
            if self.reader.needs_encoder_tokenizer(model.config) or self.reader.trained_context(model.config):
                raise ValueError("--entropy_samples draws words token by token from a model that reads its token ids "
                                 "alone; this model embeds text with its encoder's tokenizer or reads previous "
                                 "sentences: drop --entropy_samples.")
            eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
            self.word_ends = torch.tensor(sorted({*self.word_begins.tolist(), *eos}))
        self.cut_context_tokens = 0  # of the last score(): tokens read with fewer tokens before them than given

    @property
    def trained_context(self) -> int:
        """How many previous sentences the model was trained with (0: sentence by sentence, or any causal LM)."""
        return self.reader.trained_context(self.model.config)

    def encode(self, sentence: Sentence, context: list[Sentence] = ()) -> "Encoded":
        """The model's input for `sentence` after the `context` sentences (the previous sentences of its document):
        BOS, the context, the sentence's tokens; the word of each scored token (the sentence's own); each token's end
        offset in `text` (BOS: where the kept context starts) and how many context tokens come first. A model that
        reads a sentence at once (no window) takes at most MAX_UNWINDOWED_TOKENS."""
        encoded = self.reader.encode(sentence, list(context))
        if self.window is None and len(encoded.ids) > MAX_UNWINDOWED_TOKENS:
            raise ValueError(f"{sentence.source}: the sentence has {len(encoded.ids):,} tokens with BOS and its "
                             f"context; this model reads a sentence at once, and holds its logits for every token, so "
                             f"it takes at most {MAX_UNWINDOWED_TOKENS:,}: split the line into sentences.")
        return encoded

    def pieces(self, encoded: list["Encoded"]) -> list[Piece]:
        """Every encoded sentence cut into the pieces the model reads (one, unless it is longer than the window)."""
        return [Piece(i, *window) for i, item in enumerate(encoded)
                for window in sliding_windows(len(item.ids), item.first_scored, self.window, self.stride)]

    @torch.inference_mode()
    def token_surprisals(self, encoded: list["Encoded"], pieces: list[Piece]) -> list[TokenScores]:
        """For each piece (of the same or different sentences): the surprisal of its scored tokens."""
        features = self.reader.features([encoded[p.item] for p in pieces],
                                        [encoded[p.item].ids[p.start : p.stop] for p in pieces])
        # padded as in training: right, with the pad id, and zero vectors at padded positions
        padded = FusionDataCollator(pad_token_id=self.tokenizer.pad_token_id or 0)(features)
        inputs = {k: v.to(self.device) for k, v in padded.items() if k != "labels"}
        input_ids = inputs["input_ids"]
        logprobs = torch.log_softmax(self.model(**inputs).logits.float(), dim=-1)
        token_bits = (-logprobs[:, :-1].gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1) / math.log(2)).cpu()
        # -log2 B after each position: the probability that the next token begins a word (or is EOS)
        boundary = None
        if self.word_starts is not None:
            starts = self.word_starts.to(logprobs.device)
            boundary = (-logprobs.index_select(-1, starts).logsumexp(-1) / math.log(2)).cpu()
        # the entropy of the distribution at each position, which the next token is drawn from: as it is, and given
        # that the next token begins a new word (the others' probability moved onto the word-initial tokens)
        entropy = conditioned = None
        if self.entropy:
            entropy = (-(logprobs.exp() * logprobs).sum(-1) / math.log(2)).cpu()
            begin = given_word_begins(logprobs, self.word_begins.to(logprobs.device))
            conditioned = (-(begin.exp() * begin).sum(-1) / math.log(2)).cpu()
        scores = []
        for row, piece in enumerate(pieces):
            first, stop = piece.first - piece.start, piece.stop - piece.start  # in the row
            score = TokenScores(token_bits[row, first - 1 : stop - 1])
            if boundary is not None:
                score.after, score.before = boundary[row, first:stop], float(boundary[row, first - 1])
            if entropy is not None:
                score.entropy = conditioned[row, first - 1 : stop - 1]
                score.entropy_unconditioned = entropy[row, first - 1 : stop - 1]
            scores.append(score)
        return scores

    def score(self, sentences: list[Sentence], context_sentences: int | str | None = None,
              progress: bool = True) -> list[WordSurprisal]:
        """One row per word of `sentences`, in order. `context_sentences` K: each sentence is read after the K
        sentences before it in its document ("all": the document so far), conditioned on, never scored; a document's
        first sentence scores as without context. None: as a fusion model was trained (0 for other models)."""
        context_sentences = self.trained_context if context_sentences is None else context_sentences
        self.reader.check_context(self.model.config, context_sentences)
        contexts = [[] for _ in sentences]
        if context_sentences:
            count = len(sentences) if context_sentences == "all" else context_sentences
            before = previous_sentences(list(range(len(sentences))), [s.document for s in sentences], count)
            contexts = [[sentences[k] for k in indices] for indices in before]
        encoded = [self.encode(s, c) for s, c in zip(sentences, contexts)]  # every sentence checked before scoring
        pieces = self.pieces(encoded)
        self.cut_context_tokens = sum(p.stop - p.first for p in pieces if p.start > 0)
        if self.cut_context_tokens:
            logger.info("%d of %d tokens were scored with a cut context (windows of %d tokens, %d apart: each kept at "
                        "least %d tokens before it)", self.cut_context_tokens,
                        sum(len(e.ids) - e.first_scored for e in encoded), self.window, self.stride,
                        self.window - self.stride)
        # batches of similar length waste little padding; the scores go back to their sentences below
        order = sorted(range(len(pieces)), key=lambda i: pieces[i].stop - pieces[i].start)
        scores = [None] * len(pieces)
        work = [self.work(piece) for piece in pieces]
        self.announce_long_rows(pieces, work)
        unit = "prefix token" if self.reads_every_prefix else "token"
        with tqdm(total=sum(work), desc="Surprisal", unit=unit, unit_scale=True, disable=not progress) as bar:
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                for i, score in zip(chunk, self.token_surprisals(encoded, [pieces[i] for i in chunk])):
                    scores[i] = score
                    bar.update(work[i])
        per_sentence = [[] for _ in encoded]
        for piece, score in zip(pieces, scores):  # pieces are in sentence order, and in order within a sentence
            per_sentence[piece.item].append(score)
        rows = [row for item, parts in zip(encoded, per_sentence) for row in self.words(item, parts)]
        if self.entropy_samples:
            estimates = [value for index, item in enumerate(tqdm(encoded, desc="Sampled entropy", unit="sentence",
                                                                 disable=not progress))
                         for value in self.sampled_entropy(item, index)]
            for row, value in zip(rows, estimates):
                row.entropy_sampled = value
        return rows

    @torch.inference_mode()
    def sampled_entropy(self, item: "Encoded", index: int) -> list[float]:
        """Each word's next-word entropy (bits), estimated at its position as the mean of -log2 p(w) over
        `entropy_samples` words w drawn from the model there: the first token given that a word begins (a sentence's
        first word: any token), then token by token until the model begins another word or ends the sentence, whose
        probability (B, as the leading-space correction's) ends the word's; at most SAMPLED_WORD_TOKENS tokens a word.
        Seeded by `entropy_seed` and the sentence's `index`, so a rerun draws the same words. A model with a window
        reads the most recent tokens that leave room for the word."""
        generator = torch.Generator().manual_seed(self.entropy_seed * 1_000_003 + index)
        begins, ends = self.word_begins.to(self.device), self.word_ends.to(self.device)
        first_tokens = [item.first_scored + item.owners.index(j) for j in range(len(item.sentence.words))]
        estimates = []
        for j, position in enumerate(first_tokens):
            keep = position if self.window is None else min(position, self.window - SAMPLED_WORD_TOKENS - 1)
            rows = torch.tensor(item.ids[position - keep : position], device=self.device).repeat(
                self.entropy_samples, 1)
            logprobs = torch.log_softmax(self.model(input_ids=rows).logits[:, -1].float(), -1)
            if j:  # given that a word begins here
                logprobs = torch.full_like(logprobs, -math.inf).index_copy(-1, begins,
                                                                           given_word_begins(logprobs, begins))
            token = torch.multinomial(logprobs.exp().cpu(), 1, generator=generator).to(self.device)
            total = logprobs.gather(-1, token).squeeze(-1)
            open_ = torch.ones(self.entropy_samples, dtype=torch.bool, device=self.device)
            for _ in range(SAMPLED_WORD_TOKENS):
                rows = torch.cat([rows, token], dim=1)
                logprobs = torch.log_softmax(self.model(input_ids=rows).logits[:, -1].float(), -1)
                ending = logprobs.index_select(-1, ends).logsumexp(-1)  # the word ends: another begins, or EOS
                token = torch.multinomial(logprobs.exp().cpu(), 1, generator=generator).to(self.device)
                continues = ~torch.isin(token.squeeze(-1), ends)
                total = total + torch.where(open_, torch.where(continues, logprobs.gather(-1, token).squeeze(-1),
                                                                ending), torch.zeros_like(total))
                open_ = open_ & continues
                if not open_.any():
                    break
            estimates.append(float(-total.mean() / math.log(2)))
        return estimates

    def work(self, piece: Piece) -> int:
        """What reading `piece` costs, in the progress bar's unit: its tokens, or for a model that reads every prefix
        the tokens of all its prefixes (n(n+1)/2)."""
        length = piece.stop - piece.start
        return length * (length + 1) // 2 if self.reads_every_prefix else length

    def announce_long_rows(self, pieces: list[Piece], work: list[int]):
        """A model that reads every prefix spends most of its time on the longest rows: said before scoring, with
        their share of the work (the progress bar counts the same work, so its time estimate holds)."""
        if not self.reads_every_prefix:
            return
        long = [i for i, piece in enumerate(pieces) if piece.stop - piece.start > LONG_ROW_TOKENS]
        if long:
            longest = max(pieces[i].stop - pieces[i].start for i in long)
            logger.warning("%d of %d rows have more than %d tokens (the longest %d): this model's encoder reads every "
                           "prefix, so a row of n tokens costs n(n+1)/2 prefix tokens, and these rows are %.0f %% of "
                           "the work. The progress bar counts prefix tokens: its time estimate includes them.",
                           len(long), len(pieces), LONG_ROW_TOKENS, longest,
                           100 * sum(work[i] for i in long) / sum(work))

    def words(self, item: "Encoded", parts: list[TokenScores]) -> list[WordSurprisal]:
        """The sentence's word rows from its pieces' token scores: the sum over each word's tokens, plus the
        leading-space correction when it is on."""
        sentence = item.sentence
        bits = torch.cat([part.bits for part in parts]).tolist()
        totals, counts, last = [0.0] * len(sentence.words), [0] * len(sentence.words), [0] * len(sentence.words)
        for token, (owner, value) in enumerate(zip(item.owners, bits)):
            totals[owner] += value
            counts[owner] += 1
            last[owner] = token
        corrections = [0.0] * len(sentence.words)
        if self.word_starts is not None:
            after = torch.cat([part.after for part in parts]).tolist()
            first_ids = [item.ids[item.first_scored + (last[w - 1] + 1 if w else 0)] for w in range(len(totals))]
            for w in range(len(totals)):
                begins = first_ids[w] in self.word_start_set
                before = (after[last[w - 1]] if w else parts[0].before) if begins else 0.0
                corrections[w] = after[last[w]] - before
        entropy = [None] * len(sentence.words)
        if self.entropy:  # before each word's first token: given that a word begins there (the first: as it is)
            token_entropy = torch.cat([part.entropy for part in parts]).tolist()
            for token, owner in reversed(list(enumerate(item.owners))):
                entropy[owner] = token_entropy[token]
            entropy[0] = float(parts[0].entropy_unconditioned[0])
        return [WordSurprisal(sentence.id, j, word, totals[j] + corrections[j], counts[j],
                              corrections[j] if self.word_starts is not None else None, entropy[j])
                for j, word in enumerate(sentence.words)]


def checked_device(device: str | None) -> torch.device:
    """The device to score on (default: cuda when available), refused before any model loads where it is no device
    name or is not on this machine."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a device name (cpu, cuda, cuda:1, mps, …).") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    if not available.get(chosen.type, False):
        raise ValueError(f"--device {device}: no {chosen.type} device on this machine; use "
                         f"{' or '.join(name for name, there in available.items() if there)}.")
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} cuda device(s).")
    return chosen


def output_names(columns: list[str], scored: list[str]) -> list[str]:
    """The scored columns' names in a TSV that keeps the input's `columns`: each as it is, or prefixed with model_
    until no input column has it (surprisal → model_surprisal → model_model_surprisal)."""
    names = []
    for name in scored:
        while name in columns:
            name = f"model_{name}"
        names.append(name)
    return names


def write_tsv(rows: list[WordSurprisal], path: str | Path, sentences: list[Sentence] | None = None):
    """One line per word: a TSV input's own columns first (every field as read), then sentence, word_index, (word, for
    a text input), surprisal, tokens and, with the correction, bow_correction; a scored column whose name the input
    has is written as model_<name> (the input's columns keep their names)."""
    corrected = any(row.bow_correction is not None for row in rows)
    with_entropy = any(row.entropy is not None for row in rows)
    sampled = any(row.entropy_sampled is not None for row in rows)
    inputs = [f for s in sentences for f in s.fields] if sentences and sentences[0].fields is not None else None
    columns = list(inputs[0]) if inputs else []
    scored = ["sentence", "word_index", *([] if inputs else ["word"]), "surprisal", "tokens",
              *(["bow_correction"] if corrected else []), *(["entropy"] if with_entropy else []),
              *(["entropy_sampled"] if sampled else [])]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        # words and a TSV's fields hold no tab or newline, so none needs quoting or escaping: each is written as given
        writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_NONE, quotechar=None, lineterminator="\n")
        writer.writerow([*columns, *output_names(columns, scored)])
        for k, row in enumerate(rows):
            extra = ([f"{row.bow_correction:.6f}"] if corrected else []) + (
                [f"{row.entropy:.6f}"] if with_entropy else []) + ([f"{row.entropy_sampled:.6f}"] if sampled else [])
            writer.writerow([*(inputs[k][c] for c in columns), row.sentence, row.word_index,
                             *([] if inputs else [row.word]), f"{row.surprisal:.6f}", row.tokens, *extra])
