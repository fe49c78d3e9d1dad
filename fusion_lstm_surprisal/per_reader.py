"""Per-reader reading data: a long table of one row per reader and word (eye tracking: first fixation, gaze
duration, go-past, total reading time; self-paced reading per reader), each reading matched to a scored word, with
skips and unrecorded readings kept apart; and the per-reader regression, a mixed model with random intercepts by
reader (and by word), beside reading_times' averaged one."""

from dataclasses import dataclass

import numpy as np

from .reading_times import (
    MAX_READING_TIME, Protocol, RegressionWords, check_regression_words, decimal_or_missing, design, reading_time_rows,
)
from .sentences import document_of_row


@dataclass
class ReaderTable:
    """A long table of reading measures, one row per reader and word (eye tracking: first fixation, gaze duration,
    go-past, total reading time; self-paced reading per reader): each row's reader, the input word it reads (its index
    among the scored words) and each measure's value (NaN: not recorded; 0: the reader skipped the word). A skipped
    or unrecorded row leaves that measure's fits; its word stays in the model's context."""

    path: str
    readers: np.ndarray
    word_index: np.ndarray
    measures: dict[str, np.ndarray]

    def read(self, measure: str) -> np.ndarray:
        """The rows that carry a reading of `measure`: recorded and not skipped."""
        values = self.measures[measure]
        return np.isfinite(values) & (values > 0)

    def averaged(self, measure: str, words: int) -> np.ndarray:
        """Each scored word's mean `measure` over the readers that read it (NaN where none did): what the averaged
        regression fits."""
        read = self.read(measure)
        sums = np.bincount(self.word_index[read], self.measures[measure][read], minlength=words)
        counts = np.bincount(self.word_index[read], minlength=words)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

    def counts(self, measure: str) -> dict[str, int]:
        values = self.measures[measure]
        return {"rows": int(len(values)), "skipped": int(np.sum(values == 0)),
                "not_recorded": int(np.sum(~np.isfinite(values))), "read": int(self.read(measure).sum())}


def read_reader_table(path: str, reader_column: str, position_column: str, document_columns: list[str],
                      word_column: str, measures: list[str], words: dict[tuple, tuple[int, str]]) -> ReaderTable:
    """A long per-reader TSV: one row per reader and word, the word named by its document (`document_columns`'
    values joined by "/", as the input's) and its `position_column` value, which must name a scored word of `words`
    ({(document, position): (index, word)}) with the same word. Measures: a number ≥ 0 (0: skipped), or empty/NA
    (not recorded)."""
    columns = {reader_column: "--reader_column", position_column: "--position_column", word_column: "--word_column",
               **{c: "--document_column" for c in document_columns}, **{m: "--rt_column" for m in measures}}
    rows = reading_time_rows(path, columns)
    readers, indices, values = [], [], {m: [] for m in measures}
    for number, row in enumerate(rows, 2):
        key = (document_of_row(row, document_columns) if document_columns else None,
               (row[position_column] or "").strip())
        if key not in words:
            where = f"document {key[0]!r}, " if document_columns else ""
            raise ValueError(f"{path}:{number}: {where}{position_column} {key[1]!r} is no word of the input (each row "
                             f"names a scored word by {'its document and ' if document_columns else ''}position).")
        index, word = words[key]
        if (row[word_column] or "").strip() != word:
            raise ValueError(f"{path}:{number}: the word is {row[word_column]!r} but the input's word at that position "
                             f"is {word!r}.")
        readers.append(row[reader_column])
        indices.append(index)
        for measure in measures:
            value = decimal_or_missing(row[measure])
            if value is None or value < 0 or value > MAX_READING_TIME:
                raise ValueError(f"{path}:{number}: {measure}={row[measure]!r} is not a reading measure (a number ≥ "
                                 "0, 0 for a skipped word, empty or NA where none was recorded).")
            values[measure].append(value)
    return ReaderTable(path, np.array(readers, dtype=object), np.array(indices),
                       {m: np.array(v, dtype=float) for m, v in values.items()})


# the per-reader fits (--mixed_model): random intercepts of the readers, or of the readers and the words (crossed)
MIXED_MODELS = ("reader", "reader+item")


def mixed_model_fit(table: ReaderTable, measure: str, surprisal: np.ndarray, data: RegressionWords,
                    protocol: Protocol, random: str = "reader") -> dict:
    """The per-reader regression of `measure`: one row per reading (not skipped, its word kept by the protocol), the
    same fixed predictors as the averaged fit, and random intercepts by reader (`reader`) or by reader and word
    (`reader+item`, crossed: statsmodels fits it with variance components, which grows slow past ~10,000 rows),
    both fitted by maximum likelihood. ΔLL per reading and the likelihood-ratio test of surprisal's columns; its
    coefficients with their standard errors."""
    import statsmodels.api as sm
    from scipy import stats

    if random not in MIXED_MODELS:
        raise ValueError(f"--mixed_model {random!r}: use one of {', '.join(MIXED_MODELS)}.")
    every = np.ones(len(surprisal), dtype=bool)  # the design of every word, then each reading's word's row of it
    baseline, full = design(surprisal, data.base, every, protocol.spillover, data.starts)
    rows = table.read(measure) & data.keep[table.word_index]
    words, y = table.word_index[rows], table.measures[measure][rows]
    readers = np.unique(table.readers[rows], return_inverse=True)[1]
    items = np.unique(words, return_inverse=True)[1]
    check_regression_words(len(y), full.shape[1] + 2)
    if random == "reader":
        groups, components = readers, None
    else:  # crossed: one group, the readers and the words as variance components
        groups = np.ones(len(y))
        components = {"reader": {1.0: np.eye(readers.max() + 1)[readers]}, "item": {1.0: np.eye(items.max() + 1)[items]}}

    def fit(x):
        import warnings

        with warnings.catch_warnings():  # statsmodels' convergence chatter: the fit's own flag is reported
            warnings.simplefilter("ignore")
            return sm.MixedLM(y, x[words], groups=groups, exog_vc=components).fit(reml=False)

    base_fit, full_fit = fit(baseline), fit(full)
    lags = slice(baseline.shape[1], full.shape[1])
    ratio = 2 * (full_fit.llf - base_fit.llf)
    return {"random_intercepts": random, "rows": int(len(y)), "readers": int(readers.max() + 1),
            "items": int(items.max() + 1), "delta_log_likelihood": float((full_fit.llf - base_fit.llf) / len(y)),
            "surprisal_coefficients_ms_per_bit": [float(v) for v in full_fit.fe_params[lags]],
            "surprisal_standard_errors": [float(v) for v in full_fit.bse_fe[lags]],
            "likelihood_ratio_test": {"statistic": float(ratio), "degrees_of_freedom": protocol.spillover + 1,
                                      "p_value": float(stats.chi2.sf(ratio, protocol.spillover + 1))},
            "converged": bool(full_fit.converged and base_fit.converged)}
