"""How well word surprisal predicts human reading times: Pearson r and Spearman rho over all words (as the paper),
and the field's standard measure, delta log-likelihood (ΔLL): the gain in log-likelihood per word of a linear
regression of reading time on surprisal over a baseline regression without it.

Baseline predictors: word length in characters, log unigram frequency (wordfreq's Zipf scale), position in the
sentence, and the same three for the previous word (spillover). The full model adds the surprisal of the word and of
the previous word. Excluded from the regressions, and counted: the first word of each sentence (it has no previous
word for the spillover predictors) and words with punctuation other than an inner apostrophe or hyphen (their
reading times carry wrap-up effects at clause and sentence ends, and their frequency is not a word's frequency).
Correlations use every word.
"""

import csv
import re
from pathlib import Path

import numpy as np


PLAIN_WORD = re.compile(r"^[A-Za-z0-9]+(?:['’-][A-Za-z0-9]+)*$")


def read_reading_times(path: str, rt_column: str = "meanItemRT", word_column: str = "word") -> list[tuple[str, float]]:
    """(word, reading time) per row of a TSV, in order."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        raise ValueError(f"Reading-time file {path} has no rows.")
    for column in (rt_column, word_column):
        if column not in rows[0]:
            raise ValueError(f"{path} has no column {column!r} (columns: {', '.join(rows[0])}); choose it with "
                             "--rt_column / --word_column.")
    out = []
    for number, row in enumerate(rows, 2):
        try:
            out.append((row[word_column], float(row[rt_column])))
        except ValueError:
            raise ValueError(f"{path}:{number}: {rt_column}={row[rt_column]!r} is not a number.") from None
    return out


def predictors(words: list[str], word_indices: list[int]) -> dict[str, np.ndarray]:
    from wordfreq import zipf_frequency

    length = np.array([len(w) for w in words], dtype=float)
    frequency = np.array([zipf_frequency(w.strip(".,;:!?\"'()“”‘’").lower(), "en") for w in words])
    position = np.array(word_indices, dtype=float)
    previous = lambda x: np.concatenate([[np.nan], x[:-1]])  # noqa: E731
    return {"length": length, "frequency": frequency, "position": position, "previous_length": previous(length),
            "previous_frequency": previous(frequency)}


def included(words: list[str], word_indices: list[int]) -> np.ndarray:
    """Words that enter the regressions (see the module's docstring)."""
    return np.array([index > 0 and bool(PLAIN_WORD.match(word)) for word, index in zip(words, word_indices)])


def delta_log_likelihood(rt: np.ndarray, surprisal: np.ndarray, base: dict[str, np.ndarray], keep: np.ndarray
                         ) -> dict:
    """ΔLL per word of OLS rt ~ baseline + surprisal + previous surprisal over OLS rt ~ baseline."""
    import statsmodels.api as sm

    previous_surprisal = np.concatenate([[np.nan], surprisal[:-1]])
    baseline = np.column_stack([base[name] for name in sorted(base)])[keep]
    full = np.column_stack([baseline, surprisal[keep], previous_surprisal[keep]])
    y = rt[keep]
    base_fit = sm.OLS(y, sm.add_constant(baseline)).fit()
    full_fit = sm.OLS(y, sm.add_constant(full)).fit()
    return {"delta_log_likelihood": (full_fit.llf - base_fit.llf) / len(y), "regression_words": int(len(y)),
            "surprisal_coefficient_ms_per_bit": float(full_fit.params[-2]),
            "surprisal_p_value": float(full_fit.pvalues[-2])}


def evaluate(surprisal_rows: list, reading_times: list[tuple[str, float]], source: str = "reading times") -> dict:
    """r, rho and ΔLL of one model's word surprisals (rows from SurprisalScorer.score, in the order of the
    reading-time rows) against the reading times."""
    from scipy import stats

    if len(surprisal_rows) != len(reading_times):
        raise ValueError(f"{len(surprisal_rows)} words have surprisals but {source} has {len(reading_times)} rows: "
                         "the surprisal input must be the reading-time file itself (or list the same words).")
    for number, (row, (word, _)) in enumerate(zip(surprisal_rows, reading_times), 2):
        if row.word != word:
            raise ValueError(f"{source}:{number}: the word is {word!r} but the surprisal row says {row.word!r}.")
    words = [row.word for row in surprisal_rows]
    indices = [row.word_index for row in surprisal_rows]
    surprisal = np.array([row.surprisal for row in surprisal_rows])
    rt = np.array([value for _, value in reading_times])
    keep = included(words, indices)
    regression = delta_log_likelihood(rt, surprisal, predictors(words, indices), keep)
    slope, intercept = np.polyfit(surprisal, rt, 1)
    return {
        "pearson_r": float(stats.pearsonr(surprisal, rt)[0]),
        "linear_fit": {"intercept_ms": float(intercept), "ms_per_bit": float(slope)},
        "binned": binned(surprisal, rt),
        "spearman_rho": float(stats.spearmanr(surprisal, rt)[0]),
        "words": len(words),
        "excluded_from_regression": {"first_word_of_sentence": int(sum(i == 0 for i in indices)),
                                     "with_punctuation": int(sum(i > 0 and not PLAIN_WORD.match(w)
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (scatter, bars) = plt.subplots(1, 2, figsize=(10, 4))
    for name, values in surprisals.items():
        points = scatter.scatter(values, rt, s=3, alpha=0.25, label=f"{name} (r = {results[name]['pearson_r']:.3f})")
        slope, intercept = np.polyfit(values, rt, 1)
        xs = np.linspace(values.min(), values.max(), 50)
        scatter.plot(xs, intercept + slope * xs, color=points.get_facecolor()[0][:3], linewidth=2)
    scatter.set_xlabel("word surprisal (bits)")
    scatter.set_ylabel("mean reading time (ms)")
    scatter.legend(fontsize="small", markerscale=4)
    names = list(results)
    bars.bar(names, [results[n]["delta_log_likelihood"] * 1000 for n in names])
    bars.set_ylabel("ΔLL per word (× 1000 nats)")
    bars.set_title("gain over the baseline regression")
    for label in bars.get_xticklabels():
        label.set_rotation(20)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
