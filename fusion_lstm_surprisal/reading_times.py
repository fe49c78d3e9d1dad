"""How well word surprisal predicts human reading times: Pearson r and Spearman rho over all words (as the paper),
and the field's standard measure, delta log-likelihood (ΔLL): the gain in log-likelihood per word of a linear
regression of reading time on surprisal over a baseline regression without it.

How the regressions are built is a `Protocol` (PROTOCOLS names them; each field is also a flag of run_surprisal.py):
- the baseline predictors (BASELINES). `simple`: word length in characters, log unigram frequency (wordfreq's Zipf
  scale, or a study's own frequencies from a column), position in the sentence, and length and frequency of each of
  the `spillover` previous words (default 2, for self-paced reading); `interactions` (Wilcox et al. 2020, Pimentel &
  Meister 2024): length, frequency and length × frequency of the word and of each spillover word. The full model
  adds the surprisal of the word and of those previous words.
- how far the previous words reach back (`spillover_scope`): within the sentence, or across sentences within the
  document (a story); a word whose previous words would lie before that start lacks predictors.
- which words leave the regressions, counted (`exclusions`). `strict`: words that lack a predictor, the first word of
  each sentence, and words with punctuation other than an inner apostrophe or hyphen (their reading times carry
  wrap-up effects at clause and sentence ends, and their frequency is not a word's frequency). `missing`: only the
  words that lack a predictor. Correlations use every word.
- how the held-out folds are drawn (`folds`). ΔLL is reported as the field does (Wilcox et al. 2020): held out, by
  10-fold cross-validation: both regressions fitted on nine folds and the gain in Gaussian log-likelihood measured on
  the words of the tenth. `groups`: whole stories (or sentences) form the folds, so no story is both fitted and
  measured; `words`: words dealt into folds at random, as Pimentel & Meister's code (rows shuffled, then cut in ten),
  which lets a story's neighbouring words sit on both sides and reads somewhat higher. Its 95 % interval is a
  bootstrap over the groups either way. The in-sample number (both fitted and measured on all words) stays beside it,
  with a likelihood-ratio test of the nested regressions and a permutation test of surprisal within groups.
"""

import csv
import math
import re
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np

from fusion_lstm_data.files import read_text_file, text_lines


PLAIN_WORD = re.compile(r"^[A-Za-z0-9]+(?:['’-][A-Za-z0-9]+)*$")


# no word is read for longer than this, in any unit a reading-time file uses (100 s in milliseconds)
MAX_READING_TIME = 1e5


def reading_time_rows(path: str, columns: dict[str, str]) -> list[dict]:
    """The rows of a reading-time TSV, each with every column of `columns` ({column: the flag that names it}), and
    as many fields as the header."""
    rows = list(csv.DictReader(text_lines(read_text_file(path, "Reading-time file")), delimiter="\t",
                               quoting=csv.QUOTE_NONE))
    if not rows:
        raise ValueError(f"Reading-time file {path} has no rows.")
    for column, flag in columns.items():
        if column not in rows[0]:
            raise ValueError(f"{path} has no column {column!r} (columns: {', '.join(rows[0])}); choose it with "
                             f"{flag}.")
    header = [name for name in rows[0] if name is not None]
    for number, row in enumerate(rows, 2):
        if None in row or None in row.values():
            raise ValueError(f"{path}:{number}: the row's fields do not match the header's {len(header)} (a missing "
                             "or an extra tab).")
    return rows


def read_reading_times(path: str, rt_column: str = "meanItemRT", word_column: str = "word") -> list[tuple[str, float]]:
    """(word, reading time) per row of a TSV, in order. Reading times that cannot be regressed on are refused: not a
    number, negative, above MAX_READING_TIME, or all the same."""
    out = []
    rows = reading_time_rows(path, {rt_column: "--rt_column", word_column: "--word_column"})
    for number, row in enumerate(rows, 2):
        value = decimal_number(row[rt_column])
        if value is None:
            raise ValueError(f"{path}:{number}: {rt_column}={row[rt_column]!r} is not a number.")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{path}:{number}: {rt_column}={row[rt_column]!r} is not a reading time (a finite number "
                             "≥ 0): fix or remove the row.")
        if value > MAX_READING_TIME:
            raise ValueError(f"{path}:{number}: {rt_column}={row[rt_column]!r} is above {MAX_READING_TIME:.0e}, no "
                             "plausible reading time of a word (in milliseconds or seconds): fix or remove the row.")
        out.append((row[word_column], value))
    if len({value for _, value in out}) == 1:
        raise ValueError(f"{path}: every {rt_column} is {out[0][1]:g}: reading times without variance give no "
                         "statistic to publish (choose the reading-time column with --rt_column).")
    return out


# how a TSV marks a value it does not have (pandas' and R's defaults among them)
MISSING_VALUES = {"", "NA", "N/A", "NaN", "nan", "null", "None", "-"}


def read_frequencies(path: str, column: str) -> np.ndarray:
    """A study's own log frequency of each row's word, from `column` of the reading-time TSV (any scale: a log
    probability, a Zipf value, a unigram surprisal); NaN where the row has none (MISSING_VALUES), and the word leaves
    the regressions as lacking a predictor. A value that is neither is refused naming the row."""
    values = []
    for number, row in enumerate(reading_time_rows(path, {column: "--frequency_column"}), 2):
        value = decimal_or_missing(row[column])
        if value is None:
            raise ValueError(f"{path}:{number}: {column}={row[column]!r} is not a frequency (a decimal number, or "
                             f"empty or NA where the study has none).")
        values.append(value)
    values = np.array(values)
    if np.isnan(values).all():
        raise ValueError(f"{path}: the column {column!r} (--frequency_column) has no value.")
    return values


# a number as a data file writes one: digits, one decimal point, an exponent (not Python's 1_000, nan, inf, ２)
DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def decimal_or_missing(text: str | None) -> float | None:
    """`text` as a number, NaN where it marks a missing value (MISSING_VALUES), None where it is neither."""
    text = (text or "").strip()
    return math.nan if text in MISSING_VALUES else decimal_number(text)


def decimal_number(text: str | None) -> float | None:
    """`text` as a number, or None where it is not one as data files write numbers (DECIMAL)."""
    text = (text or "").strip()
    return float(text) if DECIMAL.fullmatch(text) else None


DEFAULT_SPILLOVER = 2
FOLDS = 10
BOOTSTRAP_SAMPLES = 1000
PERMUTATIONS = 999  # of the permutation test: its smallest p is 1/1000


def span_positions(starts: np.ndarray) -> np.ndarray:
    """Each word's position in its span (a sentence or a document), `starts` marking each span's first word."""
    index = np.arange(len(starts))
    return index - np.maximum.accumulate(np.where(starts, index, 0))


def lagged(x: np.ndarray, lag: int, starts: np.ndarray | None = None) -> np.ndarray:
    """x of the word `lag` words before; NaN where that word lies before the start of the word's span (`starts` marks
    each span's first word; None: one span)."""
    if not lag:
        return np.asarray(x, dtype=float)
    out = np.concatenate([np.full(lag, np.nan), np.asarray(x, dtype=float)[: len(x) - lag]])
    if starts is not None:
        out[span_positions(starts) < lag] = np.nan
    return out


def length_and_frequency(words: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each word's length in characters and log unigram frequency (wordfreq's Zipf scale, punctuation stripped)."""
    from wordfreq import zipf_frequency

    length = np.array([len(w) for w in words], dtype=float)
    frequency = np.array([zipf_frequency(w.strip(".,;:!?\"'()“”‘’").lower(), "en") for w in words])
    return length, frequency


def simple_baseline(length, frequency, position, spillover: int, lag) -> dict[str, np.ndarray]:
    """Length, frequency and position of the word; length and frequency of each spillover word."""
    out = {"length": length, "frequency": frequency, "position": position}
    for k in range(1, spillover + 1):
        out[f"length_{k}_back"], out[f"frequency_{k}_back"] = lag(length, k), lag(frequency, k)
    return out


def interactions_baseline(length, frequency, position, spillover: int, lag) -> dict[str, np.ndarray]:
    """As Wilcox et al. (2020) and Pimentel & Meister (2024): length, frequency and length × frequency of the word and
    of each spillover word; no position."""
    out = {}
    for k in range(spillover + 1):
        suffix = f"_{k}_back" if k else ""
        out[f"length{suffix}"], out[f"frequency{suffix}"] = lag(length, k), lag(frequency, k)
        out[f"length_x_frequency{suffix}"] = lag(length * frequency, k)
    return out


# The baseline regressions a surprisal is tested against (--baseline): name → its predictors
BASELINES = {"simple": simple_baseline, "interactions": interactions_baseline}
# where the previous words may lie (--spillover_scope), which words leave the regressions (--exclusions), and what the
# held-out folds are made of (--folds): the module's docstring says what each means
SPILLOVER_SCOPES = ("sentence", "document")
EXCLUSIONS = ("strict", "missing")
FOLD_SCHEMES = ("groups", "words")


@dataclass(frozen=True)
class Protocol:
    """How reading times are regressed on surprisal (the module's docstring says what each field means)."""

    baseline: str = "simple"
    spillover: int = DEFAULT_SPILLOVER
    spillover_scope: str = "sentence"
    exclusions: str = "strict"
    folds: str = "groups"

    def __post_init__(self):
        for name, allowed in (("baseline", tuple(BASELINES)), ("spillover_scope", SPILLOVER_SCOPES),
                              ("exclusions", EXCLUSIONS), ("folds", FOLD_SCHEMES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name} {getattr(self, name)!r}: use one of {', '.join(allowed)}.")
        if not isinstance(self.spillover, int) or self.spillover < 0:
            raise ValueError(f"--spillover must be 0 or more, got {self.spillover}.")

    def as_dict(self) -> dict:
        return asdict(self)


PROTOCOLS = {
    # this tool's: stories held out whole, the regression's words read as plain words within their sentence
    "default": Protocol(),
    # Pimentel & Meister (2024), as their released code runs it (tpimentelms/probability-of-a-word-experiments:
    # get_rt_with_surprisal_dataset.py lags each story's words by 1-3; rt_vs_surprisal.R fits time ~ surprisal +
    # 3 previous surprisals + word_len*freq + the previous words' prev_freq*prev_word_len; r_utils.R shuffles the rows,
    # drops those with a missing value and cuts them into 10 folds). Their frequencies come from their own unigram
    # list: pass them with --frequency_column to match their numbers
    "pimentel_meister_2024": Protocol(baseline="interactions", spillover=3, spillover_scope="document",
                                      exclusions="missing", folds="words"),
}


def span_starts(word_indices: list[int], documents: list | None, scope: str) -> np.ndarray:
    """The first word of each span the previous words stay within: each sentence (its word index 0), or each
    document (a change of `documents`' label; None: the whole input is one document)."""
    if scope == "sentence":
        return np.asarray(word_indices) == 0
    labels = np.asarray(documents if documents is not None else [0] * len(word_indices), dtype=object)
    return np.concatenate([[True], labels[1:] != labels[:-1]]) if len(labels) else np.zeros(0, dtype=bool)


def predictors(words: list[str], word_indices: list[int], protocol: Protocol = Protocol(),
               starts: np.ndarray | None = None, frequency: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The baseline regression's predictors (see the module's docstring and BASELINES), by name; the previous words'
    within the spans `starts` marks (default: the sentences); `frequency`: a study's own (default: wordfreq's)."""
    length, wordfreq = length_and_frequency(words)
    frequency = wordfreq if frequency is None else np.asarray(frequency, dtype=float)
    starts = np.asarray(word_indices) == 0 if starts is None else starts
    return BASELINES[protocol.baseline](length, frequency, np.array(word_indices, dtype=float), protocol.spillover,
                                        partial(lagged, starts=starts))


def exclusions(words: list[str], word_indices: list[int], base: dict[str, np.ndarray], protocol: Protocol
               ) -> dict[str, np.ndarray]:
    """Which words leave the regressions, by reason, each word under its first: lacking a predictor (a previous word
    before its span's start, or no frequency; the surprisal of the previous words lacks where their length does),
    and with `strict` exclusions the first word of each sentence and words with punctuation."""
    missing = np.isnan(np.column_stack(list(base.values()))).any(axis=1)
    reasons = {"missing_predictors": missing}
    if protocol.exclusions == "strict":
        first = (np.asarray(word_indices) == 0) & ~missing
        punctuated = ~np.array([bool(PLAIN_WORD.match(w)) for w in words]) & ~missing & ~first
        reasons.update(first_words_of_sentence=first, with_punctuation=punctuated)
    return reasons


def included(reasons: dict[str, np.ndarray]) -> np.ndarray:
    """The words that enter the regressions: those no reason of `exclusions` takes."""
    return ~np.any(np.vstack(list(reasons.values())), axis=0)


def design(surprisal: np.ndarray, base: dict[str, np.ndarray], keep: np.ndarray, spillover: int,
           starts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The baseline's and the full regression's predictor matrices (constant first) over the kept words; the full
    one ends with the surprisal of the word and of each previous word up to `spillover` (within the spans `starts`
    marks)."""
    baseline = np.column_stack([np.ones(len(surprisal)), *(base[name] for name in sorted(base))])[keep]
    return baseline, np.column_stack([baseline, *surprisal_lags(surprisal, keep, spillover, starts)])


def surprisal_lags(surprisal: np.ndarray, keep: np.ndarray, spillover: int, starts: np.ndarray | None) -> list:
    """The surprisal of each kept word and of each of its `spillover` previous words."""
    return [lagged(surprisal, k, starts)[keep] for k in range(spillover + 1)]


def design_names(base: dict[str, np.ndarray], spillover: int) -> list[str]:
    """The columns of `design`'s full matrix, by name."""
    return ["constant", *sorted(base), "surprisal", *(f"surprisal_{lag}_back" for lag in range(1, spillover + 1))]


def check_design(x: np.ndarray, names: list[str]):
    """Every predictor varies over the regression's words and none is a linear combination of the others: a
    rank-deficient design gives coefficients and p-values that mean nothing. Refused, naming the columns."""
    constant = [name for name, column in zip(names[1:], x[:, 1:].T) if np.ptp(column) == 0]
    if constant:
        raise ValueError(f"The predictor(s) {', '.join(constant)} take a single value over all {len(x)} regression "
                         "words: there is nothing to fit. A constant surprisal column (check --surprisal_column or "
                         "the model's scores) or too few distinct words.")
    rank = np.linalg.matrix_rank(x)
    if rank < x.shape[1]:
        dependent = [name for i, name in enumerate(names) if np.linalg.matrix_rank(np.delete(x, i, axis=1)) == rank]
        raise ValueError(f"The regression's predictors are linearly dependent (rank {rank} of {x.shape[1]}): "
                         f"{', '.join(dependent)} can be written by the others over these {len(x)} words, so their "
                         "coefficients are not determined. Score more words, or a column that differs from these.")


def gaussian_log_likelihood(y: np.ndarray, x_train: np.ndarray, y_train: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per-word log-likelihood of y under OLS fitted on (x_train, y_train), with its maximum-likelihood variance."""
    coefficients, *_ = np.linalg.lstsq(x_train, y_train, rcond=None)
    variance = np.mean((y_train - x_train @ coefficients) ** 2)
    return -0.5 * np.log(2 * np.pi * variance) - (y - x @ coefficients) ** 2 / (2 * variance)


def check_regression_words(words: int, predictors: int):
    if words <= predictors + 1:
        raise ValueError(f"The regression has {words} words for {predictors} predictors: too few to fit; score more "
                         "words (or use a smaller --spillover).")


@dataclass
class RegressionWords:
    """The words as the regressions read them under a protocol: the baseline's predictors, the first word of each span
    the previous words stay within, the words each exclusion takes, and the words kept."""

    base: dict[str, np.ndarray]
    starts: np.ndarray
    reasons: dict[str, np.ndarray]
    keep: np.ndarray

    @classmethod
    def of(cls, words: list[str], word_indices: list[int], protocol: Protocol, documents: list | None = None,
           frequency: np.ndarray | None = None, rt: np.ndarray | None = None) -> "RegressionWords":
        """`rt`: the reading times, NaN where no reader has one (every reader skipped the word): those words stay in
        the model's context and the previous words' predictors, and leave the regressions first."""
        starts = span_starts(word_indices, documents, protocol.spillover_scope)
        base = predictors(words, word_indices, protocol, starts, frequency)
        reasons = exclusions(words, word_indices, base, protocol)
        if rt is not None and not np.isfinite(rt).all():
            unread = ~np.isfinite(rt)
            reasons = {"no_reading_time": unread, **{reason: taken & ~unread for reason, taken in reasons.items()}}
        return cls(base, starts, reasons, included(reasons))

    def excluded(self) -> dict[str, int]:
        return {reason: int(taken.sum()) for reason, taken in self.reasons.items()}


def check_regression(words: list[str], word_indices: list[int], groups, protocol: Protocol = Protocol(),
                     documents: list | None = None, frequency: np.ndarray | None = None, entropy: bool = False):
    """Before any scoring: the regressions will have enough words for their predictors, and the held-out ΔLL at
    least 2 groups."""
    data = RegressionWords.of(words, word_indices, protocol, documents, frequency)
    # constant, baseline, surprisal lags (and entropy)
    predictors_count = 1 + len(data.base) + protocol.spillover + 1 + entropy
    check_regression_words(int(np.sum(data.keep)), predictors_count)
    check_groups(groups)


def check_groups(groups) -> np.ndarray:
    """The distinct groups (stories or sentences) of the held-out ΔLL: at least 2 to hold one out."""
    names = np.unique(np.asarray(groups))
    if len(names) < 2:
        raise ValueError(f"Held-out ΔLL needs at least 2 groups (stories or sentences) to hold out; got {len(names)}.")
    return names


def held_out_delta(y: np.ndarray, baseline: np.ndarray, full: np.ndarray, groups: np.ndarray, seed: int = 0,
                   folds: str = "groups") -> dict:
    """ΔLL per word on held-out words: groups dealt into FOLDS folds (`folds` "groups"), or words dealt at random
    ("words"); both regressions fitted without a fold and measured on it; a 95 % bootstrap interval over the groups
    and a sign-flip p-value over them."""
    names = check_groups(groups)
    rng = np.random.default_rng(seed)
    if folds == "groups":
        count = min(FOLDS, len(names))
        fold_of = dict(zip(rng.permutation(names), np.arange(len(names)) % count))
        fold = np.array([fold_of[g] for g in groups])
    else:  # shuffled, then cut into FOLDS runs of (nearly) equal length, as R's cut(seq(1, n), breaks = 10)
        count = min(FOLDS, len(y))
        fold = np.empty(len(y), dtype=int)
        fold[rng.permutation(len(y))] = np.arange(len(y)) * count // len(y)
    delta = np.empty(len(y))
    for k in range(count):
        test, train = fold == k, fold != k
        delta[test] = (gaussian_log_likelihood(y[test], full[train], y[train], full[test])
                       - gaussian_log_likelihood(y[test], baseline[train], y[train], baseline[test]))
    per_fold = [float(delta[fold == k].mean()) for k in range(count)]
    index = {name: np.flatnonzero(groups == name) for name in names}
    sums = np.array([delta[index[n]].sum() for n in names])
    counts = np.array([len(index[n]) for n in names])
    return {"delta_log_likelihood": float(delta.mean()), "interval_95": bootstrap_interval(sums, counts, rng),
            "folds": count, "fold_scheme": folds, "per_fold": per_fold, "groups": len(names), "seed": seed,
            "p_value": sign_flip_p_value(sums, rng),
            # each group's summed held-out gain: what compare_held_out pairs two models by
            "by_group": {"names": [str(n) for n in names], "words": counts.tolist(), "sums": sums.tolist()}}


def bootstrap_interval(sums: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> list[float]:
    """95 % interval of the per-word gain, a bootstrap over groups: each draw resamples the groups and divides their
    summed gains by their summed word counts."""
    draws = rng.integers(0, len(sums), size=(BOOTSTRAP_SAMPLES, len(sums)))
    means = sums[draws].sum(1) / counts[draws].sum(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def compare_held_out(model: dict, reference: dict, seed: int = 0) -> dict:
    """Does `model`'s surprisal raise the held-out ΔLL over `reference`'s? Both are `held_out` results of one corpus,
    baseline and spillover (hence the same folds): each group's gain of the one minus the other's, paired by group.
    The per-word difference, its bootstrap 95 % interval over the groups, and the one-sided sign-flip p-value that
    `model` gains more."""
    for name, held_out in (("model", model), ("reference", reference)):
        if "by_group" not in held_out:
            raise ValueError(f"The {name}'s held-out ΔLL has no per-group gains (scored before they were stored): "
                             "score it again with run_surprisal.py.")
    first, second = model["by_group"], reference["by_group"]
    if first["names"] != second["names"] or first["words"] != second["words"]:
        raise ValueError("The two held-out ΔLLs were measured on different groups or words: compare models scored on "
                         "the same reading-time file, with the same baseline and spillover.")
    differences, counts = np.array(first["sums"]) - np.array(second["sums"]), np.array(first["words"])
    rng = np.random.default_rng(seed)
    return {"difference": float(differences.sum() / counts.sum()),
            "interval_95": bootstrap_interval(differences, counts, rng),
            "p_value": sign_flip_p_value(differences, rng), "groups": len(counts)}


SIGN_FLIP_DRAWS = 10_000  # random sign flips where there are too many groups to take every one


def sign_flip_p_value(gains: np.ndarray, rng: np.random.Generator) -> float:
    """One-sided p-value that the gains are positive (surprisal adds to the baseline, or one model's surprisal adds
    more than another's): each held-out group's summed ΔLL keeps or flips its sign
    (every one of the 2^groups flips up to 16 groups, whose smallest p is 1/2^groups: 1/1024 with 10 stories; else
    SIGN_FLIP_DRAWS random flips and the observed signs, so that p ≥ 1/(SIGN_FLIP_DRAWS + 1), never 0); p is the
    share of flipped totals at least the observed total. A useless predictor loses a little on held-out words (about
    k/2n nats a word for k extra predictors), so its p stays large rather than reading that loss as an effect either
    way."""
    observed = gains.sum()
    if len(gains) <= 16:
        signs = 1 - 2 * ((np.arange(2 ** len(gains))[:, None] >> np.arange(len(gains))) & 1)
    else:  # the observed signs count as one of the draws (a Monte-Carlo p-value is never 0)
        drawn = rng.choice([-1, 1], size=(SIGN_FLIP_DRAWS, len(gains)))
        signs = np.vstack([np.ones((1, len(gains)), dtype=int), drawn])
    totals = signs @ gains
    return float(np.mean(totals >= observed - 1e-12 * abs(observed)))


def delta_log_likelihood(rt: np.ndarray, surprisal: np.ndarray, data: RegressionWords,
                         protocol: Protocol = Protocol(), groups: np.ndarray | None = None,
                         entropy: np.ndarray | None = None, seed: int = 0, permutations: int = PERMUTATIONS) -> dict:
    """ΔLL per word of OLS rt ~ baseline + surprisal (of the word and the protocol's spillover words) over OLS
    rt ~ baseline, over `data`'s kept words: in-sample, with the likelihood-ratio test of the nested regressions; and
    with `groups` (one label per word: its story or sentence; None: in-sample only) held out (`protocol.folds`) and a
    permutation test of surprisal within the groups. With `entropy` (of the next-word distribution before each word),
    also what it adds to the full regression: `entropy`."""
    import statsmodels.api as sm
    from scipy import stats

    spillover, keep = protocol.spillover, data.keep
    baseline, full = design(surprisal, data.base, keep, spillover, data.starts)
    y = rt[keep]
    check_regression_words(len(y), full.shape[1] + (entropy is not None))
    names = design_names(data.base, spillover)
    with_entropy = None if entropy is None else np.column_stack([full, entropy[keep]])
    check_design(full if entropy is None else with_entropy, names if entropy is None else [*names, "entropy"])
    base_fit = sm.OLS(y, baseline).fit()
    full_fit = sm.OLS(y, full).fit()
    lags = slice(baseline.shape[1], full.shape[1])  # the word's surprisal, then each spillover word's
    ratio = 2 * (full_fit.llf - base_fit.llf)
    result = {"delta_log_likelihood": (full_fit.llf - base_fit.llf) / len(y), "regression_words": int(len(y)),
              "spillover": spillover,
              "surprisal_coefficient_ms_per_bit": float(full_fit.params[baseline.shape[1]]),
              "surprisal_p_value": float(full_fit.pvalues[baseline.shape[1]]),
              "surprisal_coefficients_ms_per_bit": [float(v) for v in full_fit.params[lags]],
              "surprisal_standard_errors": [float(v) for v in full_fit.bse[lags]],
              "surprisal_p_values": [float(v) for v in full_fit.pvalues[lags]],
              # every coefficient of the full regression with its standard error: what a paper's table shows
              "coefficients": {name: {"estimate": float(b), "standard_error": float(s)}
                               for name, b, s in zip(names, full_fit.params, full_fit.bse)},
              "formula": f"rt ~ {' + '.join(names[1:])}  (baseline: rt ~ {' + '.join(names[1:baseline.shape[1]])})",
              # in-sample: 2 ΔLL·n against χ² with one degree of freedom per surprisal column
              "likelihood_ratio_test": {"statistic": float(ratio), "degrees_of_freedom": spillover + 1,
                                        "p_value": float(stats.chi2.sf(ratio, spillover + 1))}}
    if groups is not None:
        groups = np.asarray(groups)
        result["held_out"] = held_out_delta(y, baseline, full, groups[keep], seed, protocol.folds)
        if permutations:
            result["permutation_test"] = permutation_test(y, baseline, surprisal, data, spillover, groups, seed,
                                                          permutations)
    if entropy is not None:
        fit = sm.OLS(y, with_entropy).fit()
        result["entropy"] = {"delta_log_likelihood": (fit.llf - full_fit.llf) / len(y),
                             "coefficient_ms_per_bit": float(fit.params[-1]), "p_value": float(fit.pvalues[-1])}
        if groups is not None:
            result["entropy"]["held_out"] = held_out_delta(y, full, with_entropy, groups[keep], seed, protocol.folds)
    return result


def permutation_test(y: np.ndarray, baseline: np.ndarray, surprisal: np.ndarray, data: RegressionWords,
                     spillover: int, groups: np.ndarray, seed: int, permutations: int = PERMUTATIONS) -> dict:
    """Is the in-sample ΔLL larger than surprisal unrelated to the reading times gives? Each draw shuffles the
    surprisals among the words of each group (a story keeps its own values; the previous words' surprisal follows the
    shuffled order) and refits the full regression; one-sided p = (1 + draws at least the observed ΔLL) /
    (1 + permutations), so never 0 and at least 1/(1 + permutations)."""
    # the baseline's part of y and of the surprisal columns projected out once (Frisch-Waugh-Lovell): a draw then
    # fits only its own surprisal columns
    basis, _ = np.linalg.qr(baseline)
    y_rest = y - basis @ (basis.T @ y)
    base_rss = float(y_rest @ y_rest)

    def gain(values: np.ndarray) -> float:  # in-sample ΔLL per word: half the log ratio of the residual sums of squares
        columns = np.column_stack(surprisal_lags(values, data.keep, spillover, data.starts))
        rest = columns - basis @ (basis.T @ columns)
        explained = float(y_rest @ (rest @ np.linalg.lstsq(rest, y_rest, rcond=None)[0]))
        return 0.5 * math.log(base_rss / (base_rss - explained))

    observed = gain(surprisal)
    rng = np.random.default_rng(seed)
    _, codes = np.unique(groups, return_inverse=True)
    by_group = np.argsort(codes, kind="stable")
    shuffled = np.empty_like(surprisal)
    at_least = 0
    for _ in range(permutations):
        order = np.lexsort((rng.random(len(codes)), codes))  # each group's words, in a random order
        shuffled[by_group] = surprisal[order]
        at_least += gain(shuffled) >= observed - 1e-12 * abs(observed)
    return {"p_value": (1 + at_least) / (1 + permutations), "permutations": permutations, "observed": observed,
            "within": "groups of the held-out ΔLL", "seed": seed}


def check_same_words(words: list[str], reading_times: list[tuple[str, float]], source: str = "reading times"):
    """The scored words must be the reading-time rows' words, in order (checked before scoring, and again after)."""
    if len(words) != len(reading_times):
        raise ValueError(f"{len(words)} words have surprisals but {source} has {len(reading_times)} rows: the "
                         "surprisal input must be the reading-time file itself (or list the same words).")
    for number, (scored, (word, _)) in enumerate(zip(words, reading_times), 2):
        if scored != word:
            raise ValueError(f"{source}:{number}: the word is {word!r} but the surprisal row says {scored!r}.")


def evaluate(surprisal_rows: list, reading_times: list[tuple[str, float]], source: str = "reading times",
             protocol: Protocol = Protocol(), groups: list[str] | None = None, documents: list | None = None,
             frequency: np.ndarray | None = None, seed: int = 0, permutations: int = PERMUTATIONS,
             readers=None, measure: str | None = None, mixed_model: str | None = None) -> dict:
    """r, rho and ΔLL of one model's word surprisals (rows from SurprisalScorer.score, in the order of the
    reading-time rows) against the reading times, regressed as `protocol` says; the held-out ΔLL's groups: `groups`
    (one label per word, e.g. its story; default: its sentence); `documents` (one label per word): where the previous
    words may reach with the document spillover scope (None: one document); `frequency`: a study's own per word
    (default: wordfreq's); with the rows' entropy (when scored), what it adds beside surprisal. `seed`: of the folds,
    the bootstrap, the sign flips and the permutations. With `readers` (a per-reader table whose `measure` the reading
    times average), how many readings there were and, with `mixed_model`, the per-reader fit (mixed_model_fit)."""
    from scipy import stats

    words = [row.word for row in surprisal_rows]
    check_same_words(words, reading_times, source)
    indices = [row.word_index for row in surprisal_rows]
    surprisal = np.array([row.surprisal for row in surprisal_rows])
    rt = np.array([value for _, value in reading_times], dtype=float)
    data = RegressionWords.of(words, indices, protocol, documents, frequency, rt)
    read = np.isfinite(rt)  # a word no reader read (all skipped it) has no reading time
    groups = [row.sentence for row in surprisal_rows] if groups is None else groups
    # the entropy predictor: the sampled next-word estimate where it was drawn, else the first token's
    sampled = [getattr(row, "entropy_sampled", None) for row in surprisal_rows]
    entropy = sampled if all(e is not None for e in sampled) else [getattr(row, "entropy", None) for row in
                                                                   surprisal_rows]
    entropy = np.array(entropy, dtype=float) if all(e is not None for e in entropy) else None
    regression = delta_log_likelihood(rt, surprisal, data, protocol, groups, entropy, seed, permutations)
    if readers is not None:
        regression["readings"] = readers.counts(measure)
        if mixed_model:
            from .per_reader import mixed_model_fit  # the per-reader module builds on this one

            regression["mixed_model"] = mixed_model_fit(readers, measure, surprisal, data, protocol, mixed_model)
    slope, intercept = np.polyfit(surprisal[read], rt[read], 1)
    return {
        "pearson_r": float(stats.pearsonr(surprisal[read], rt[read])[0]),
        "linear_fit": {"intercept_ms": float(intercept), "ms_per_bit": float(slope)},
        "binned": binned(surprisal[read], rt[read]),
        "spearman_rho": float(stats.spearmanr(surprisal[read], rt[read])[0]),
        "words": len(words),
        "words_with_reading_times": int(read.sum()),
        # how well the model predicts the corpus: log2 of its word perplexity (every word, before exclusions)
        "mean_surprisal_bits": float(surprisal.mean()),
        "baseline": protocol.baseline,
        "protocol": protocol.as_dict(),
        "excluded_from_regression": data.excluded(),
        **regression,
    }


def binned(surprisal: np.ndarray, rt: np.ndarray, bins: int = 20) -> list[dict]:
    """Mean surprisal and mean reading time in `bins` equally filled bins of surprisal: the scatter, summarised
    small enough to keep in a results JSON."""
    order = np.argsort(surprisal, kind="stable")
    return [{"surprisal": float(surprisal[part].mean()), "rt": float(rt[part].mean()), "words": int(len(part))}
            for part in np.array_split(order, bins) if len(part)]


def held_out_text(metrics: dict, scale: float = 1.0, digits: int = 5) -> str:
    """The held-out ΔLL and its 95 % interval, times `scale` (— for results made before it was measured)."""
    held_out = metrics.get("held_out")
    if held_out is None:
        return "—"
    value, (low, high) = held_out["delta_log_likelihood"], held_out["interval_95"]
    p_value = f", p = {held_out['p_value']:.3g}" if held_out.get("p_value") is not None else ""
    return f"{value * scale:.{digits}f} [{low * scale:.{digits}f}, {high * scale:.{digits}f}]{p_value}"
