"""How well word surprisal predicts human reading times: Pearson r and Spearman rho over all words (as the paper),
and the field's standard measure, delta log-likelihood (ΔLL): the gain in log-likelihood per word of a linear
regression of reading time on surprisal over a baseline regression without it.

Baseline predictors: word length in characters, log unigram frequency (wordfreq's Zipf scale), position in the
sentence, and length and frequency of each of the `spillover` previous words (default 2, for self-paced reading). The
full model adds the surprisal of the word and of those previous words. Excluded from the regressions, and counted:
the first `spillover` words of each sentence (they lack previous words in the sentence) and words with punctuation
other than an inner apostrophe or hyphen (their reading times carry wrap-up effects at clause and sentence ends, and
their frequency is not a word's frequency). Correlations use every word.

ΔLL is reported as the field does (Wilcox et al. 2020): held out, by 10-fold cross-validation over groups (the
stories, or the sentences): both regressions are fitted on nine folds and the gain in Gaussian log-likelihood is
measured on the words of the tenth; its 95 % interval is a bootstrap over the groups. The in-sample number (both
fitted and measured on all words) stays beside it, for comparison with earlier results.
"""

import csv
import math
import re
from pathlib import Path

import numpy as np

from fusion_lstm_data.files import read_text_file, text_lines


PLAIN_WORD = re.compile(r"^[A-Za-z0-9]+(?:['’-][A-Za-z0-9]+)*$")


# no word is read for longer than this, in any unit a reading-time file uses (100 s in milliseconds)
MAX_READING_TIME = 1e5


def read_reading_times(path: str, rt_column: str = "meanItemRT", word_column: str = "word") -> list[tuple[str, float]]:
    """(word, reading time) per row of a TSV, in order. Reading times that cannot be regressed on are refused: not a
    number, negative, above MAX_READING_TIME, or all the same."""
    rows = list(csv.DictReader(text_lines(read_text_file(path, "Reading-time file")), delimiter="\t",
                               quoting=csv.QUOTE_NONE))
    if not rows:
        raise ValueError(f"Reading-time file {path} has no rows.")
    for column in (rt_column, word_column):
        if column not in rows[0]:
            raise ValueError(f"{path} has no column {column!r} (columns: {', '.join(rows[0])}); choose it with "
                             "--rt_column / --word_column.")
    header = [name for name in rows[0] if name is not None]
    out = []
    for number, row in enumerate(rows, 2):
        if None in row or None in row.values():
            raise ValueError(f"{path}:{number}: the row's fields do not match the header's {len(header)} (a missing "
                             "or an extra tab).")
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


# a number as a data file writes one: digits, one decimal point, an exponent (not Python's 1_000, nan, inf, ２)
DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def decimal_number(text: str | None) -> float | None:
    """`text` as a number, or None where it is not one as data files write numbers (DECIMAL)."""
    text = (text or "").strip()
    return float(text) if DECIMAL.fullmatch(text) else None


DEFAULT_SPILLOVER = 2
FOLDS = 10
BOOTSTRAP_SAMPLES = 1000


def lagged(x: np.ndarray, lag: int) -> np.ndarray:
    """x of the word `lag` words before (NaN for the first `lag` words)."""
    return np.concatenate([np.full(lag, np.nan), x[: len(x) - lag]]) if lag else x


def length_and_frequency(words: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each word's length in characters and log unigram frequency (wordfreq's Zipf scale, punctuation stripped)."""
    from wordfreq import zipf_frequency

    length = np.array([len(w) for w in words], dtype=float)
    frequency = np.array([zipf_frequency(w.strip(".,;:!?\"'()“”‘’").lower(), "en") for w in words])
    return length, frequency


def simple_baseline(words: list[str], word_indices: list[int], spillover: int) -> dict[str, np.ndarray]:
    """Length, frequency and position of the word; length and frequency of each spillover word."""
    length, frequency = length_and_frequency(words)
    out = {"length": length, "frequency": frequency, "position": np.array(word_indices, dtype=float)}
    for lag in range(1, spillover + 1):
        out[f"length_{lag}_back"], out[f"frequency_{lag}_back"] = lagged(length, lag), lagged(frequency, lag)
    return out


def interactions_baseline(words: list[str], word_indices: list[int], spillover: int) -> dict[str, np.ndarray]:
    """As Wilcox et al. (2020) and Pimentel & Meister (2024): length, frequency and length × frequency of the word and
    of each spillover word; no position."""
    length, frequency = length_and_frequency(words)
    out = {}
    for lag in range(spillover + 1):
        suffix = f"_{lag}_back" if lag else ""
        out[f"length{suffix}"], out[f"frequency{suffix}"] = lagged(length, lag), lagged(frequency, lag)
        out[f"length_x_frequency{suffix}"] = lagged(length * frequency, lag)
    return out


# The baseline regressions a surprisal is tested against (--baseline): name → its predictors
BASELINES = {"simple": simple_baseline, "interactions": interactions_baseline}


def predictors(words: list[str], word_indices: list[int], spillover: int = DEFAULT_SPILLOVER,
               baseline: str = "simple") -> dict[str, np.ndarray]:
    """The baseline regression's predictors (see the module's docstring and BASELINES), by name."""
    if baseline not in BASELINES:
        raise ValueError(f"baseline {baseline!r}: use one of {', '.join(BASELINES)}.")
    return BASELINES[baseline](words, word_indices, spillover)


def leading_words(spillover: int) -> int:
    """How many words at the start of each sentence the regressions leave out: those without `spillover` previous
    words in the sentence (at least the first, which has no previous word)."""
    return max(spillover, 1)


def included(words: list[str], word_indices: list[int], spillover: int = DEFAULT_SPILLOVER) -> np.ndarray:
    """Words that enter the regressions (see the module's docstring)."""
    return np.array([index >= leading_words(spillover) and bool(PLAIN_WORD.match(word))
                     for word, index in zip(words, word_indices)])


def design(surprisal: np.ndarray, base: dict[str, np.ndarray], keep: np.ndarray, spillover: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """The baseline's and the full regression's predictor matrices (constant first) over the kept words; the full
    one ends with the surprisal of the word and of each previous word up to `spillover`."""
    baseline = np.column_stack([np.ones(len(surprisal)), *(base[name] for name in sorted(base))])[keep]
    lags = [lagged(surprisal, lag)[keep] for lag in range(spillover + 1)]
    return baseline, np.column_stack([baseline, *lags])


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


def check_regression(words: list[str], word_indices: list[int], groups, spillover: int = DEFAULT_SPILLOVER,
                     baseline: str = "simple", entropy: bool = False):
    """Before any scoring: the regressions will have enough words for their predictors, and the held-out ΔLL at
    least 2 groups."""
    keep = included(words, word_indices, spillover)
    # constant, baseline, surprisal lags (and entropy)
    predictors_count = 1 + len(predictors(words, word_indices, spillover, baseline)) + spillover + 1 + entropy
    check_regression_words(int(np.sum(keep)), predictors_count)
    check_groups(groups)


def check_groups(groups) -> np.ndarray:
    """The distinct groups (stories or sentences) of the held-out ΔLL: at least 2 to hold one out."""
    names = np.unique(np.asarray(groups))
    if len(names) < 2:
        raise ValueError(f"Held-out ΔLL needs at least 2 groups (stories or sentences) to hold out; got {len(names)}.")
    return names


def held_out_delta(y: np.ndarray, baseline: np.ndarray, full: np.ndarray, groups: np.ndarray, seed: int = 0) -> dict:
    """ΔLL per word on held-out words: groups dealt into FOLDS folds; both regressions fitted without a fold and
    measured on it; a 95 % bootstrap interval over the groups."""
    names = check_groups(groups)
    folds = min(FOLDS, len(names))
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(rng.permutation(names), np.arange(len(names)) % folds))
    fold = np.array([fold_of[g] for g in groups])
    delta = np.empty(len(y))
    for k in range(folds):
        test, train = fold == k, fold != k
        delta[test] = (gaussian_log_likelihood(y[test], full[train], y[train], full[test])
                       - gaussian_log_likelihood(y[test], baseline[train], y[train], baseline[test]))
    per_fold = [float(delta[fold == k].mean()) for k in range(folds)]
    index = {name: np.flatnonzero(groups == name) for name in names}
    sums = np.array([delta[index[n]].sum() for n in names])
    counts = np.array([len(index[n]) for n in names])
    return {"delta_log_likelihood": float(delta.mean()), "interval_95": bootstrap_interval(sums, counts, rng),
            "folds": folds, "per_fold": per_fold, "groups": len(names), "seed": seed,
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


def delta_log_likelihood(rt: np.ndarray, surprisal: np.ndarray, base: dict[str, np.ndarray], keep: np.ndarray,
                         spillover: int = DEFAULT_SPILLOVER, groups: np.ndarray | None = None,
                         entropy: np.ndarray | None = None, seed: int = 0) -> dict:
    """ΔLL per word of OLS rt ~ baseline + surprisal (of the word and `spillover` previous words) over OLS
    rt ~ baseline: in-sample, and held out over `groups` (one label per word; None: in-sample only). With `entropy`
    (of the next-word distribution before each word), also what it adds to the full regression: `entropy`."""
    import statsmodels.api as sm

    baseline, full = design(surprisal, base, keep, spillover)
    y = rt[keep]
    check_regression_words(len(y), full.shape[1] + (entropy is not None))
    names = design_names(base, spillover)
    with_entropy = None if entropy is None else np.column_stack([full, entropy[keep]])
    check_design(full if entropy is None else with_entropy, names if entropy is None else [*names, "entropy"])
    base_fit = sm.OLS(y, baseline).fit()
    full_fit = sm.OLS(y, full).fit()
    lags = slice(baseline.shape[1], full.shape[1])  # the word's surprisal, then each spillover word's
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
              "formula": f"rt ~ {' + '.join(names[1:])}  (baseline: rt ~ {' + '.join(names[1:baseline.shape[1]])})"}
    if groups is not None:
        result["held_out"] = held_out_delta(y, baseline, full, np.asarray(groups)[keep], seed)
    if entropy is not None:
        fit = sm.OLS(y, with_entropy).fit()
        result["entropy"] = {"delta_log_likelihood": (fit.llf - full_fit.llf) / len(y),
                             "coefficient_ms_per_bit": float(fit.params[-1]), "p_value": float(fit.pvalues[-1])}
        if groups is not None:
            result["entropy"]["held_out"] = held_out_delta(y, full, with_entropy, np.asarray(groups)[keep], seed)
    return result


def check_same_words(words: list[str], reading_times: list[tuple[str, float]], source: str = "reading times"):
    """The scored words must be the reading-time rows' words, in order (checked before scoring, and again after)."""
    if len(words) != len(reading_times):
        raise ValueError(f"{len(words)} words have surprisals but {source} has {len(reading_times)} rows: the "
                         "surprisal input must be the reading-time file itself (or list the same words).")
    for number, (scored, (word, _)) in enumerate(zip(words, reading_times), 2):
        if scored != word:
            raise ValueError(f"{source}:{number}: the word is {word!r} but the surprisal row says {scored!r}.")


def evaluate(surprisal_rows: list, reading_times: list[tuple[str, float]], source: str = "reading times",
             spillover: int = DEFAULT_SPILLOVER, groups: list[str] | None = None, baseline: str = "simple",
             seed: int = 0) -> dict:
    """r, rho and ΔLL of one model's word surprisals (rows from SurprisalScorer.score, in the order of the
    reading-time rows) against the reading times over the `baseline` regression (BASELINES); the held-out ΔLL over
    `groups` (one label per word, e.g. its story; default: its sentence); with the rows' entropy (when scored), what
    it adds beside surprisal. `seed`: of the folds, the bootstrap and the sign flips."""
    from scipy import stats

    words = [row.word for row in surprisal_rows]
    check_same_words(words, reading_times, source)
    indices = [row.word_index for row in surprisal_rows]
    surprisal = np.array([row.surprisal for row in surprisal_rows])
    rt = np.array([value for _, value in reading_times])
    keep = included(words, indices, spillover)
    leading = leading_words(spillover)
    groups = [row.sentence for row in surprisal_rows] if groups is None else groups
    entropy = [getattr(row, "entropy", None) for row in surprisal_rows]
    entropy = np.array(entropy, dtype=float) if all(e is not None for e in entropy) else None
    regression = delta_log_likelihood(rt, surprisal, predictors(words, indices, spillover, baseline), keep, spillover,
                                      groups, entropy, seed)
    slope, intercept = np.polyfit(surprisal, rt, 1)
    return {
        "pearson_r": float(stats.pearsonr(surprisal, rt)[0]),
        "linear_fit": {"intercept_ms": float(intercept), "ms_per_bit": float(slope)},
        "binned": binned(surprisal, rt),
        "spearman_rho": float(stats.spearmanr(surprisal, rt)[0]),
        "words": len(words),
        # how well the model predicts the corpus: log2 of its word perplexity (every word, before exclusions)
        "mean_surprisal_bits": float(surprisal.mean()),
        "baseline": baseline,
        "excluded_from_regression": {"first_words_of_sentence": int(sum(i < leading for i in indices)),
                                     "with_punctuation": int(sum(i >= leading and not PLAIN_WORD.match(w)
                                                                 for w, i in zip(words, indices)))},
        **regression,
    }


def binned(surprisal: np.ndarray, rt: np.ndarray, bins: int = 20) -> list[dict]:
    """Mean surprisal and mean reading time in `bins` equally filled bins of surprisal: the scatter, summarised
    small enough to keep in a results JSON."""
    order = np.argsort(surprisal, kind="stable")
    return [{"surprisal": float(surprisal[part].mean()), "rt": float(rt[part].mean()), "words": int(len(part))}
            for part in np.array_split(order, bins) if len(part)]


def plot(results: dict[str, dict], surprisals: dict[str, np.ndarray], rt: np.ndarray, path: Path):
    """Surprisal vs reading time with a fitted line per model, and a bar chart of ΔLL per model."""
    plt, fig, scatter, bars = reading_times_figure(len(results))
    for name, values in surprisals.items():
        points = scatter.scatter(values, rt, s=3, alpha=0.25, label=f"{name} (r = {results[name]['pearson_r']:.3f})")
        slope, intercept = np.polyfit(values, rt, 1)
        xs = np.linspace(values.min(), values.max(), 50)
        scatter.plot(xs, intercept + slope * xs, color=points.get_facecolor()[0][:3], linewidth=2)
    scatter.set_xlabel("word surprisal (bits)")
    scatter.set_ylabel("mean reading time (ms)")
    draw_delta_bars(bars, list(results), list(results.values()))
    bars.set_title("gain over the baseline regression")
    save_reading_times_figure(plt, fig, scatter, path, markerscale=4)


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def reading_times_figure(models: int):
    """pyplot and the two panels of a reading-time figure (surprisal against reading time; ΔLL per model), the figure
    as tall as its `models` bar rows need, its layout constrained so that long model names stay inside it."""
    plt = pyplot()
    fig, (scatter, bars) = plt.subplots(1, 2, figsize=(12, max(4.0, 0.3 * models + 2)), layout="constrained")
    return plt, fig, scatter, bars


def save_reading_times_figure(plt, fig, scatter, path: Path, **legend):
    """The scatter's legend below it (one entry per model, as many as the bars, long names wrapped as the bars'),
    then the figure saved to `path`."""
    handles, labels = scatter.get_legend_handles_labels()
    scatter.legend(handles, [wrapped(label) for label in labels], fontsize="x-small", ncol=2, loc="upper center",
                   bbox_to_anchor=(0.5, -0.15), **legend)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def wrapped(name: str, width: int = 40) -> str:
    """A model's name in lines of about `width` characters, broken after a "/", "_", "-" or "+" (a name as long as
    a results path would otherwise push its panel out of the figure); a part longer than `width` stays whole."""
    lines = [""]
    for part in re.findall(r"[^/_+-]+[/_+-]*|[/_+-]+", name):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(lines)


def held_out_text(metrics: dict, scale: float = 1.0, digits: int = 5) -> str:
    """The held-out ΔLL and its 95 % interval, times `scale` (— for results made before it was measured)."""
    held_out = metrics.get("held_out")
    if held_out is None:
        return "—"
    value, (low, high) = held_out["delta_log_likelihood"], held_out["interval_95"]
    p_value = f", p = {held_out['p_value']:.3g}" if held_out.get("p_value") is not None else ""
    return f"{value * scale:.{digits}f} [{low * scale:.{digits}f}, {high * scale:.{digits}f}]{p_value}"


def draw_delta_bars(axes, names: list[str], metrics: list[dict]):
    """A horizontal bar of ΔLL per model in 10⁻³ nats per word, the first model on top (its name stays readable however
    many there are): held out with its 95 % interval and the test's p beside it, or in-sample for results made before
    the held-out ΔLL was measured."""
    rows = np.arange(len(names))
    held_out = [m.get("held_out") for m in metrics]
    if all(held_out):
        values = np.array([h["delta_log_likelihood"] for h in held_out]) * 1000
        errors = np.abs(np.array([h["interval_95"] for h in held_out]).T * 1000 - values)
        axes.barh(rows, values, xerr=errors, capsize=3)
        axes.set_xlabel("held-out ΔLL (10⁻³ nats per word), 95 % interval")
        for row, h, right in zip(rows, held_out, values + errors[1]):  # the sign-flip test of "surprisal adds"
            if h.get("p_value") is not None:
                axes.annotate(f"p={h['p_value']:.2g}", (right, row), ha="left", va="center", fontsize=8,
                              xytext=(3, 0), textcoords="offset points")
        axes.margins(x=0.15)
    else:
        axes.barh(rows, [m["delta_log_likelihood"] * 1000 for m in metrics])
        axes.set_xlabel("in-sample ΔLL (10⁻³ nats per word)")
    axes.set_yticks(rows, [wrapped(name) for name in names])
    axes.invert_yaxis()
    axes.axvline(0, color="gray", linewidth=0.8)
