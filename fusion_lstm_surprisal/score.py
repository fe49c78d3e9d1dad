"""Per-word surprisal from one or several causal LMs, and optionally how well it predicts human reading times: the
library part of run_surprisal.py (`main(argv)`), also run as `python -m fusion_lstm_surprisal.score`.

    python run_surprisal.py --model_name_or_path outputs/cpu/demo/runs/concat_seed0 \\
        --input_file sentences.txt --output_file surprisal.tsv
    python run_surprisal.py --model_name_or_path outputs/cpu/demo/runs/{none,concat}_seed0 \\
        --input_file ../shared/data/natural_stories/word_reading_times.tsv --document_column item \\
        --reading_times ../shared/data/natural_stories/word_reading_times.tsv --output_file ns/surprisal.tsv

The input is a text file (one sentence a line, words split on spaces) or a TSV with a word column (sentences by
--sentence_column, else ending after a word that ends in . ! or ?, unless the next word starts in lower case). The
output TSV has one row per input word, in order: the TSV's own columns, sentence, word_index, (word,) surprisal
(bits), tokens.

One model writes --output_file; several write one TSV each, `<output>.<name>.tsv`, scored one after another (one
model in memory at a time). With --reading_times, one JSON and one figure compare them all:
`<output>.reading_times.json` holds {"models": {name: results}} and, with several models, whether each raises the
held-out ΔLL over the first one named ({"held_out_vs_first": ...}, reading_times.compare_held_out).
"""

import gc
import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig

import modeling_fusion_lstm
from fusion_lstm_data.cli import argument_parser
from fusion_lstm_data.documents import single_sentence_documents
from fusion_lstm_data.files import check_local_folder

from .per_reader import MIXED_MODELS, read_reader_table
from .reading_figures import plot
from .reading_times import (
    PROTOCOLS, check_regression, check_same_words, compare_held_out, decimal_number, evaluate, read_frequencies,
    read_reading_times,
)
from .readers import reader_class
from .sentences import WordSurprisal, read_sentences_of_words
from .surprisal import SurprisalScorer, check_stride, checked_device, write_tsv
from .word_boundary import word_start_ids


logger = logging.getLogger("run_surprisal")


# a surprisal column's unit → the factor that turns it into bits
SURPRISAL_UNITS = {"bits": 1.0, "nats": 1 / math.log(2)}


@dataclass
class SurprisalArguments:
    input_file: str = field(metadata={"help": "Sentences (.txt, one a line) or words (.tsv with a word column)."})
    output_file: str = field(metadata={"help": "The TSV to write: one row per input word."})
    model_name_or_path: list[str] = field(default_factory=list, metadata={
        "help": "One or more causal LMs: folders or Hub ids."})
    surprisal_column: list[str] = field(default_factory=list, metadata={
        "help": "Columns of the input TSV that already hold each word's surprisal (from another tool or a hosted "
                "model), fitted against --reading_times like a model's, with no model loaded; named by the column."})
    surprisal_unit: str = field(default="bits", metadata={
        "help": "The unit of the --surprisal_column values: bits (log base 2) or nats (natural log, as many tools "
                "write them); nats are converted to bits, the unit of every result."})
    word_column: str = field(default="word", metadata={"help": "The TSV's word column."})
    sentence_column: str | None = field(default=None, metadata={"help": "The TSV's sentence id column (default: "
                                                                        "a sentence ends after a word ending in . ! "
                                                                        "or ? unless the next starts in lower "
                                                                        "case)."})
    document_column: str | None = field(default=None, metadata={"help": "The TSV's document column (Natural "
                                                                        "Stories: item), or several that name a "
                                                                        "document together (item,WorkerId: one "
                                                                        "reader's copy of a story); a text file "
                                                                        "separates documents by blank lines."})
    context_sentences: str | None = field(default=None, metadata={
        "help": "Read each sentence after the K sentences before it in its document (conditioned on, never scored); "
                "'all': the document so far. Default: a fusion model's own (as it was trained), 0 for other models."})
    stride: int | None = field(default=None, metadata={
        "help": "A model with fewer positions than an input reads it in windows this many tokens apart, so every "
                "token keeps at least window - stride tokens before it (default: half the window)."})
    bow_correction: bool = field(default=False, metadata={
        "help": "Add the leading-space correction (Pimentel & Meister 2024): the probability that the next token "
                "begins a new word. For tokenizers with a space marker (byte-level BPE, SentencePiece)."})
    protocol: str = field(default="default", metadata={
        "help": "How reading times are regressed on surprisal, by name: default (this tool's: --baseline simple "
                "--spillover 2 --spillover_scope sentence --exclusions strict --folds groups) or "
                "pimentel_meister_2024 (as their released code: --baseline interactions --spillover 3 "
                "--spillover_scope document --exclusions missing --folds words; add --frequency_column with their "
                "frequencies to match their numbers). Each flag below overrides the protocol's value."})
    baseline: str | None = field(default=None, metadata={
        "help": "The baseline regression: simple (length, log frequency, position, and length and frequency of the "
                "spillover words) or interactions (Wilcox et al. 2020, Pimentel & Meister 2024: length, frequency and "
                "length × frequency of the word and of each spillover word, no position)."})
    entropy_samples: int = field(default=0, metadata={
        "help": "Also a sampled estimate of each word's next-word entropy (bits; TSV column entropy_sampled, and the "
                "entropy predictor instead of the first token's): the mean of -log2 p(w) over this many words drawn "
                "from the model at the word's position, token by token until another word begins (seeded by "
                "--seed). Costs about samples × 2 forward passes a word; 0: off."})
    spillover: int | None = field(default=None, metadata={
        "help": "How many previous words' surprisal, length and frequency enter the ΔLL regressions (2: self-paced "
                "reading)."})
    spillover_scope: str | None = field(default=None, metadata={
        "help": "Where the previous words may lie: sentence (a word's previous words are in its sentence) or "
                "document (across sentences within the story, as --document_column names it)."})
    exclusions: str | None = field(default=None, metadata={
        "help": "Which words leave the regressions: strict (words lacking a predictor, each sentence's first word, "
                "words with punctuation) or missing (only words lacking a predictor). Counted in the JSON."})
    folds: str | None = field(default=None, metadata={
        "help": "The held-out ΔLL's 10 folds: groups (whole stories, or sentences without --document_column) or "
                "words (dealt at random: a story's words on both sides of a fold, which reads higher)."})
    frequency_column: str | None = field(default=None, metadata={
        "help": "A column of --reading_times with each word's log frequency from the study (any log scale; empty or "
                "NA: the word leaves the regressions), instead of wordfreq's Zipf frequency."})
    permutations: int = field(default=999, metadata={
        "help": "Draws of the permutation test (surprisal shuffled within each story or sentence); 0 skips it."})
    entropy: bool = field(default=False, metadata={
        "help": "Also each word's entropy (bits) of its first token's distribution given that a new word begins "
                "there (the next-token distribution renormalized over word-initial tokens; a sentence's first word: "
                "not conditioned), in the TSV and, with --reading_times, as a further predictor: its ΔLL beside "
                "surprisal's."})
    model_names: list[str] | None = field(default=None, metadata={
        "help": "A name for each model, in the output files' names and the JSON (default: its folder's name)."})
    reading_times: str | None = field(default=None, metadata={"help": "A TSV of reading times, one row per input "
                                                                      "word (e.g. Natural Stories)."})
    rt_column: list[str] = field(default_factory=lambda: ["meanItemRT"], metadata={
        "help": "The reading-time column, or several measures (first_fixation gaze_duration total_time): each is "
                "fitted; the first is the JSON's top level and the figure's, the others under `measures`."})
    reader_column: str | None = field(default=None, metadata={
        "help": "--reading_times is a long per-reader table (eye tracking, or self-paced reading per reader): one row "
                "per reader and word, this column naming the reader, each word named by --document_column and "
                "--position_column as in the input; 0 is a skipped word and empty/NA an unrecorded one (both leave "
                "that measure's fits, the word stays in the model's context). The averaged fit uses each word's "
                "mean over its readers."})
    position_column: str | None = field(default=None, metadata={
        "help": "With --reader_column: the column, in the input TSV and the per-reader table, with each word's "
                "position in its document (Natural Stories: zone; Provo: Word_Number)."})
    mixed_model: str | None = field(default=None, metadata={
        "help": "With --reader_column, also the per-reader fit: a mixed model (statsmodels MixedLM, maximum "
                "likelihood) with random intercepts by reader, or by reader and word (reader+item, crossed: slow "
                "past ~10,000 readings)."})
    encoder_name_or_path: str | None = field(default=None, metadata={
        "help": "For a fusion model with a BPE: the encoder's tokenizer (default: the packaged MiniLM)."})
    batch_size: int = field(default=16, metadata={"help": "Sentences per forward pass."})
    seed: int = field(default=0, metadata={"help": "Seed of every resampling: the held-out folds, the bootstrap "
                                                   "intervals and the sign-flip tests."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, ... (default: cuda when available)."})
    trust_remote_code: bool = field(default=True, metadata={
        "help": "Run the code saved beside a model of another project (its config's auto_map); this project's own "
                "models always load with the installed package."})

    def __post_init__(self):
        if self.context_sentences is not None and self.context_sentences != "all":
            if not re.fullmatch(r"[0-9]+", self.context_sentences):  # not isdigit: "²" is a digit int() refuses
                raise ValueError(f"--context_sentences must be a number ≥ 0 or 'all', got "
                                 f"{self.context_sentences!r}.")
            self.context_sentences = int(self.context_sentences)
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"--protocol {self.protocol!r}: use one of {', '.join(PROTOCOLS)}.")
        overrides = {name: getattr(self, name) for name in ("baseline", "spillover", "spillover_scope", "exclusions",
                                                            "folds") if getattr(self, name) is not None}
        self.regression = replace(PROTOCOLS[self.protocol], **overrides)  # every field checked
        if self.permutations < 0:
            raise ValueError(f"--permutations must be 0 or more, got {self.permutations}.")
        if self.frequency_column and not self.reading_times:
            raise ValueError("--frequency_column is a column of --reading_times: pass --reading_times.")
        if self.reader_column and not (self.reading_times and self.position_column):
            raise ValueError("--reader_column reads --reading_times as a per-reader table whose rows name their word "
                             "by --position_column (and --document_column): pass both.")
        if self.reader_column and self.frequency_column:
            raise ValueError("--frequency_column is one value per word; a per-reader table (--reader_column) has one "
                             "row per reading: drop --frequency_column (wordfreq's frequencies are used).")
        if self.mixed_model and not self.reader_column:
            raise ValueError("--mixed_model fits each reader's readings: pass the per-reader table with "
                             "--reader_column.")
        if self.mixed_model and self.mixed_model not in MIXED_MODELS:
            raise ValueError(f"--mixed_model {self.mixed_model!r}: use one of {', '.join(MIXED_MODELS)}.")
        if len(set(self.rt_column)) != len(self.rt_column) or not self.rt_column:
            raise ValueError(f"--rt_column needs one or more distinct columns, got {self.rt_column}.")
        if not self.model_name_or_path and not self.surprisal_column:
            raise ValueError("Nothing to score: pass --model_name_or_path and/or --surprisal_column.")
        if self.surprisal_column and not self.reading_times:
            raise ValueError("--surprisal_column is fitted against reading times: pass --reading_times.")
        if self.surprisal_unit not in SURPRISAL_UNITS:
            raise ValueError(f"--surprisal_unit {self.surprisal_unit!r}: use one of {', '.join(SURPRISAL_UNITS)}.")
        if self.entropy_samples < 0:
            raise ValueError(f"--entropy_samples must be 0 or more, got {self.entropy_samples}.")
        if self.entropy_samples and not self.model_name_or_path:
            raise ValueError("--entropy_samples draws words from a model: add --model_name_or_path.")
        if self.entropy and not self.model_name_or_path:
            raise ValueError("--entropy is each word's entropy of a model's next-token distribution; a "
                             "--surprisal_column carries none: add --model_name_or_path, or drop --entropy.")
        if self.entropy and self.surprisal_column:
            logger.warning("--entropy: for the models only; the surprisal columns %s carry none (their ΔLL is "
                           "surprisal's alone).", ", ".join(self.surprisal_column))
        self.model_names = self.names()
        if set(self.model_names) & set(self.surprisal_column):
            raise ValueError(f"A model and a surprisal column share the name(s) "
                             f"{sorted(set(self.model_names) & set(self.surprisal_column))}: give the model "
                             "--model_names.")
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be at least 1, got {self.batch_size}.")
        checked_device(self.device)
        for name in ("input_file", "reading_times"):
            if getattr(self, name) and not Path(getattr(self, name)).is_file():
                raise FileNotFoundError(f"--{name} {getattr(self, name)} does not exist.")
        self.check_outputs()

    def names(self) -> list[str]:
        """Each model's name: given, or its folder's name (with its parent's where two would be the same)."""
        if self.model_names is not None:
            if len(self.model_names) != len(self.model_name_or_path) or len(set(self.model_names)) != len(
                    self.model_names):
                raise ValueError(f"--model_names needs one distinct name per model: {len(self.model_name_or_path)} "
                                 f"models, names {self.model_names}.")
            return self.model_names
        for parts in (1, 2, None):
            names = ["/".join(Path(m).parts[-parts:]) if parts else m for m in self.model_name_or_path]
            if len(set(names)) == len(names):
                return names
        raise ValueError(f"--model_name_or_path names the same model twice: {self.model_name_or_path}.")

    def tsv(self, name: str) -> Path:
        """The TSV of the model called `name`."""
        output = Path(self.output_file)
        if len(self.model_name_or_path) == 1:
            return output
        return output.with_name(f"{output.stem}.{name.replace('/', '_')}{output.suffix or '.tsv'}")

    def outputs(self) -> dict[str, Path]:
        """Every file this run writes, by what it is: the TSVs and, with reading times, the JSON and PNG."""
        output = Path(self.output_file)
        extra = {"the reading-time summary": output.with_suffix(".reading_times.json"),
                 "the reading-time figure": output.with_suffix(".reading_times.png")}
        return {**{f"the TSV of model {name!r}": self.tsv(name) for name in self.model_names},
                **(extra if self.reading_times else {})}

    def check_outputs(self):
        """Before any work: no output writes over an input, and the output's folder exists (it is created) and can
        be written, so that a long scoring never dies at its last step."""
        inputs = {Path(p).resolve(): name for name, p in (("input_file", self.input_file),
                                                          ("reading_times", self.reading_times)) if p}
        for model in self.model_name_or_path:
            inputs.setdefault(Path(model).resolve(), "model_name_or_path")
            check_local_folder(model, "model_name_or_path")
        check_local_folder(self.encoder_name_or_path, "encoder_name_or_path")
        if self.encoder_name_or_path:
            inputs.setdefault(Path(self.encoder_name_or_path).resolve(), "encoder_name_or_path")
        written = {}
        for label, path in self.outputs().items():
            resolved = path.resolve()
            # an input, or a file inside an input folder (a model's config.json)
            reached = next((i for i in inputs if i == resolved or (i.is_dir() and i in resolved.parents)), None)
            if reached is not None:
                raise ValueError(f"--output_file {self.output_file} would write {path} over or inside "
                                 f"--{inputs[reached]} {reached}: choose an output outside every input.")
            if resolved in written:
                raise ValueError(f"{written[resolved]} and {label} would both be {path}: give the models --model_names "
                                 "that differ in more than '/' and '_', and none named reading_times.")
            written[resolved] = label
            if path.is_dir():
                raise IsADirectoryError(f"{path} is a folder: --output_file names the TSV to write.")
        folder = Path(self.output_file).parent
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(f"Cannot write into {folder} (--output_file): choose a folder you can write.")


def preflight(args: SurprisalArguments):
    """What can be checked of every model without its weights (its config and tokenizer), before the first is scored:
    the model exists, can read the context asked for, takes the stride, and has a space marker for the correction."""
    for path, name in zip(args.model_name_or_path, args.model_names):
        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=remote_code(path, args.trust_remote_code))
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=args.trust_remote_code)
            reader = reader_class(config)
            reader.check_context(config, args.context_sentences)
            check_stride(reader.window(config), args.stride)
            if args.bow_correction:
                word_start_ids(tokenizer)
        except (OSError, ValueError) as error:
            raise ValueError(f"Model {name!r} ({path}): {error}") from None


# this project's model types: importing the package registers them with the Auto classes
OWN_MODEL_TYPES = {modeling_fusion_lstm.FusionLSTMConfig.model_type}


def remote_code(model_name_or_path: str, trust_remote_code: bool) -> bool:
    """Whether to load a model with the code saved beside it: never for this project's own models, which load with the
    installed package (the copy saved beside a model trained before may predate the package the scorer runs with,
    e.g. its context API), else as the user allows."""
    model_type = PretrainedConfig.get_config_dict(model_name_or_path)[0].get("model_type")
    return trust_remote_code and model_type not in OWN_MODEL_TYPES


def load_model(model_name_or_path: str, trust_remote_code: bool = True, encoder_name_or_path: str | None = None):
    """The model, its tokenizer and, for a fusion model, its encoder's tokenizer (used only with a BPE)."""
    model = AutoModelForCausalLM.from_pretrained(model_name_or_path,
                                                 trust_remote_code=remote_code(model_name_or_path, trust_remote_code))
    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    encoder_tokenizer = None
    if reader_class(model.config).needs_encoder_tokenizer(model.config):
        from modeling_fusion_lstm import default_encoder_path

        encoder_tokenizer = AutoTokenizer.from_pretrained(encoder_name_or_path or default_encoder_path())
    return model, tokenizer, encoder_tokenizer


def finite_or_null(value):
    """`value` with every NaN or infinite float, however deep, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(item) for item in value]
    return value


# columns that likely name a TSV's documents (Natural Stories: item)
LIKELY_DOCUMENT_COLUMNS = ("item", "story", "story_id", "document", "document_id", "doc", "doc_id", "text_id",
                           "article")


def surprisal_from_column(sentences, column: str, path: str, unit: str = "bits") -> list[WordSurprisal]:
    """Each word's surprisal from a column of the input TSV (in `unit`, as another tool wrote them; returned in
    bits): a number ≥ 0 for every word, else refused naming the row."""
    if not sentences or sentences[0].fields is None:
        raise ValueError(f"--surprisal_column {column}: {path} is not a TSV with columns.")
    if column not in sentences[0].fields[0]:
        raise ValueError(f"{path} has no column {column!r} (columns: {', '.join(sentences[0].fields[0])}).")
    rows, number = [], 1
    for sentence in sentences:
        for index, (word, fields) in enumerate(zip(sentence.words, sentence.fields)):
            number += 1
            value = decimal_number(fields[column])
            if value is None or value < 0:
                raise ValueError(f"{path}:{number}: {column}={fields[column]!r} is not a surprisal (a finite number "
                                 f"≥ 0, in {unit}).")
            rows.append(WordSurprisal(sentence.id, index, word, value * SURPRISAL_UNITS[unit], 0))
    return rows


def warn_without_documents(args: SurprisalArguments, context_sentences, sentences):
    """A context read from a TSV without --document_column runs across its documents, and one asked of documents of
    a sentence each gives none: said, with a likely column."""
    if args.document_column and (warning := single_sentence_documents([s.document for s in sentences],
                                                                       context_sentences, args.input_file)):
        logger.warning(warning)
    if not context_sentences or args.document_column or not sentences or sentences[0].fields is None:
        return
    likely = [c for c in sentences[0].fields[0] if c.lower() in LIKELY_DOCUMENT_COLUMNS]
    hint = f"; is it {likely[0]!r}? pass --document_column {likely[0]}" if likely else ""
    logger.warning("each sentence is read after %s previous sentences, but no --document_column says where a "
                   "document ends: the whole TSV is read as one document, a story's first sentence after the one "
                   "before it%s", context_sentences, hint)


def score_model(args: SurprisalArguments, path: str, name: str, sentences) -> tuple[list, dict]:
    """One model's word rows, written to its TSV, and how it was scored (speed, windows)."""
    model, tokenizer, encoder_tokenizer = load_model(path, args.trust_remote_code, args.encoder_name_or_path)
    scorer = SurprisalScorer(model, tokenizer, encoder_tokenizer, args.batch_size, args.device, args.stride,
                             args.bow_correction, args.entropy, args.entropy_samples, args.seed)
    warn_without_documents(args, scorer.trained_context if args.context_sentences is None else args.context_sentences,
                           sentences)
    started = time.perf_counter()
    rows = scorer.score(sentences, args.context_sentences)
    seconds = time.perf_counter() - started
    write_tsv(rows, args.tsv(name), sentences)
    logger.info("%s: %d sentences, %d words in %.0f s (%.1f words/s): wrote %s", name, len(sentences), len(rows),
                seconds, len(rows) / seconds, args.tsv(name))
    info = {"model": path, "words_per_second": round(len(rows) / seconds, 1), "device": str(scorer.device),
            "cut_context_tokens": scorer.cut_context_tokens, "bow_correction": args.bow_correction,
            "context_sentences": scorer.trained_context if args.context_sentences is None else args.context_sentences}
    del model, scorer
    gc.collect()
    return rows, info


def main(argv: list[str] | None = None) -> dict | None:
    parser = argument_parser(SurprisalArguments, description=__doc__, usage="python run_surprisal.py "
                             "--model_name_or_path MODEL [MODEL ...] --input_file FILE --output_file FILE.tsv "
                             "[--reading_times FILE.tsv] [options]")
    (args,) = parser.parse_args_into_dataclasses(args=sys.argv[1:] if argv is None else argv)
    logging.basicConfig(format="%(asctime)s - %(name)s - %(message)s", datefmt="%H:%M:%S", level=logging.INFO)

    sentences = read_sentences_of_words(args.input_file, args.word_column, args.sentence_column,
                                        args.document_column)
    given = {column: surprisal_from_column(sentences, column, args.input_file, args.surprisal_unit)
             for column in args.surprisal_column}
    measures = read_measures(args, sentences) if args.reading_times else {}
    reading_times, readers = next(iter(measures.values())) if measures else (None, None)
    # the held-out ΔLL holds out whole stories where the input names them, else whole sentences
    groups = [s.document if args.document_column else s.id for s in sentences for _ in s.words]
    documents = [s.document for s in sentences for _ in s.words]  # where the previous words may reach back
    frequency = read_frequencies(args.reading_times, args.frequency_column) if args.frequency_column else None
    if reading_times is not None and not args.document_column:
        logger.warning("the held-out ΔLL holds out sentences (no --document_column): sentences of one story are not "
                       "independent, so its interval and p-value are too narrow; name the stories with "
                       "--document_column (Natural Stories: item).")
    if reading_times is not None:  # before any model is scored
        check_same_words([w for s in sentences for w in s.words], reading_times, args.reading_times)
        check_regression([w for s in sentences for w in s.words], [i for s in sentences for i in range(len(s.words))],
                         groups, args.regression, documents, frequency, args.entropy or bool(args.entropy_samples))
    preflight(args)
    results, surprisals = {}, {}
    scored = [(name, partial(score_model, args, path, name, sentences))
              for path, name in zip(args.model_name_or_path, args.model_names)]
    scored += [(column, lambda rows=rows, column=column: (rows, {"surprisal_column": column}))
               for column, rows in given.items()]
    for name, score in scored:  # one model in memory at a time
        rows, info = score()
        if reading_times is not None:
            fitted = {measure: evaluate(rows, times, args.reading_times, args.regression, groups, documents,
                                        frequency, args.seed, args.permutations, table, measure, args.mixed_model)
                      for measure, (times, table) in measures.items()}
            first, *others = args.rt_column
            results[name] = {**info, "measure": first, **fitted[first],
                             **({"measures": {m: fitted[m] for m in others}} if others else {})}
            surprisals[name] = np.array([r.surprisal for r in rows])
            for measure, result in fitted.items():
                log_result(f"{name} ({measure})" if len(fitted) > 1 else name, result)
    if reading_times is None:
        return None
    output = Path(args.output_file)
    summary = {"input_file": args.input_file, "reading_times": args.reading_times,
               "spillover": args.regression.spillover, "baseline": args.regression.baseline,
               "protocol": {"name": args.protocol, **args.regression.as_dict()},
               "frequency": args.frequency_column or "wordfreq", "seed": args.seed, "measures": args.rt_column,
               **({"readers": {"column": args.reader_column, "position_column": args.position_column,
                               "mixed_model": args.mixed_model}} if args.reader_column else {}),
               "held_out_groups": "document" if args.document_column else "sentence", "models": results,
               **versus_first(results, args.seed)}
    # a statistic that is not a number (e.g. r of a model whose surprisal never varies) is null: the file stays JSON
    output.with_suffix(".reading_times.json").write_text(json.dumps(finite_or_null(summary), indent=2,
                                                                    allow_nan=False))
    plot(results, surprisals, np.array([rt for _, rt in reading_times]), output.with_suffix(".reading_times.png"))
    return summary


def read_measures(args: SurprisalArguments, sentences) -> dict[str, tuple[list, object]]:
    """Each measure's reading times, one per scored word (NaN where no reader read it), and the per-reader table they
    average (None for a table of one row per word)."""
    if not args.reader_column:
        return {m: (read_reading_times(args.reading_times, m, args.word_column), None) for m in args.rt_column}
    words, index = {}, 0
    for sentence in sentences:
        for word, fields in zip(sentence.words, sentence.fields or [{}] * len(sentence.words)):
            if args.position_column not in fields:
                raise ValueError(f"--position_column {args.position_column!r}: the input {args.input_file} has no such "
                                 "column (a per-reader table names each word by its position in the input).")
            key = (sentence.document if args.document_column else None, fields[args.position_column].strip())
            if key in words:
                raise ValueError(f"{sentence.source}: two input words have {args.position_column} {key[1]!r}"
                                 f"{' in document ' + repr(key[0]) if key[0] else ''}: a per-reader table could not "
                                 "tell them apart.")
            words[key] = (index, word)
            index += 1
    table = read_reader_table(args.reading_times, args.reader_column, args.position_column,
                              args.document_column.split(",") if args.document_column else [], args.word_column,
                              args.rt_column, words)
    scored = [w for s in sentences for w in s.words]
    return {m: (list(zip(scored, table.averaged(m, len(scored)))), table) for m in args.rt_column}


def log_result(name: str, result: dict):
    """One model's correlations, held-out ΔLL with its interval and tests, in-sample ΔLL with its own."""
    held_out, ratio = result["held_out"], result["likelihood_ratio_test"]
    permutation = result.get("permutation_test")
    logger.info("%s: Pearson r %.3f, Spearman rho %.3f; ΔLL held out %.5f nats per word (95 %% interval %.5f to %.5f, "
                "sign-flip p %.4g over %d groups, %d folds of %s); in-sample %.5f (likelihood-ratio p %.3g%s); %d words "
                "in the regression", name, result["pearson_r"], result["spearman_rho"], held_out["delta_log_likelihood"],
                *held_out["interval_95"], held_out["p_value"], held_out["groups"], held_out["folds"],
                held_out["fold_scheme"], result["delta_log_likelihood"], ratio["p_value"],
                f", permutation p {permutation['p_value']:.3g}" if permutation else "", result["regression_words"])
    if "mixed_model" in result:
        mixed = result["mixed_model"]
        logger.info("%s: per reader (random intercepts: %s; %d readings of %d readers): ΔLL %.5f nats per reading, "
                    "surprisal %.2f ms/bit (SE %.2f), likelihood-ratio p %.3g%s", name, mixed["random_intercepts"],
                    mixed["rows"], mixed["readers"], mixed["delta_log_likelihood"],
                    mixed["surprisal_coefficients_ms_per_bit"][0], mixed["surprisal_standard_errors"][0],
                    mixed["likelihood_ratio_test"]["p_value"], "" if mixed["converged"] else " (did not converge)")


def versus_first(results: dict[str, dict], seed: int = 0) -> dict:
    """With several models: does each raise the held-out ΔLL over the first one named? (compare_held_out, logged)"""
    if len(results) < 2:
        return {}
    (first, reference), *others = results.items()
    comparisons = {}
    for name, result in others:
        comparisons[name] = compare_held_out(result["held_out"], reference["held_out"], seed)
        logger.info("%s against %s: held-out ΔLL %+.5f nats per word (95 %% interval %.5f to %.5f), p = %.3g",
                    name, first, comparisons[name]["difference"], *comparisons[name]["interval_95"],
                    comparisons[name]["p_value"])
    return {"held_out_vs_first": {"reference": first, "models": comparisons}}


if __name__ == "__main__":
    main()
