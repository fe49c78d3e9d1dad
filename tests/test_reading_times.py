"""The reading-time regression's protocols (run_surprisal.py --protocol and its fields) and its tests beside the
held-out sign flip: a synthetic corpus whose ΔLL is known in closed form, each protocol choice doing what it says, a
study's own frequencies from a column, the likelihood-ratio and permutation tests calibrated on surprisal that drives
nothing."""

import json
import math

import numpy as np
import pytest

from fusion_lstm_surprisal.reading_times import (
    PROTOCOLS, Protocol, RegressionWords, delta_log_likelihood, evaluate, read_frequencies,
)
from fusion_lstm_surprisal.sentences import WordSurprisal, read_sentences_of_words
from helpers import ROOT


NATURAL_STORIES = ROOT.parent / "shared" / "data" / "natural_stories" / "word_reading_times.tsv"


def run_surprisal(*flags):
    from fusion_lstm_surprisal.score import main

    return main([str(f) for f in flags])


@pytest.fixture(scope="module")
def stories():
    """Natural Stories' words, their index in the sentence and their story, in order."""
    sentences = read_sentences_of_words(str(NATURAL_STORIES), document_column="item")
    return ([w for s in sentences for w in s.words], [i for s in sentences for i in range(len(s.words))],
            [s.document for s in sentences for _ in s.words])


def story_lag(values: np.ndarray, documents: list[str], lag: int) -> np.ndarray:
    """values of the word `lag` words before within its story (0 before the story's start)."""
    out = np.zeros(len(values))
    for k in range(lag, len(values)):
        out[k] = values[k - lag] if documents[k - lag] == documents[k] else 0.0
    return out


def built(stories, slopes=(6.0, 3.0), noise=40.0, seed=0):
    """Surprisal drawn at random, and reading times built from it: 300 ms + each slope × the surprisal of the word,
    the word before, ... (across sentences, within the story) + Gaussian noise. Surprisal is independent of every
    baseline predictor, so the full regression's residual variance is noise² and the baseline's noise² + Σ slope²·
    var(surprisal): the population ΔLL is ½ log(1 + Σ slope² var / noise²) nats per word."""
    words, indices, documents = stories
    rng = np.random.default_rng(seed)
    shape, scale = 2.0, 4.0
    surprisal = rng.gamma(shape, scale, len(words))
    rt = 300 + sum(b * story_lag(surprisal, documents, k) for k, b in enumerate(slopes)) + rng.normal(
        0, noise, len(words))
    closed_form = 0.5 * math.log(1 + sum(b * b for b in slopes) * shape * scale ** 2 / noise ** 2)
    rows = [WordSurprisal("1", i, w, float(x), 1) for w, i, x in zip(words, indices, surprisal)]
    return rows, [(w, float(t)) for w, t in zip(words, rt)], closed_form


def test_the_published_protocol_recovers_a_delta_log_likelihood_known_in_closed_form(stories):
    """Pimentel & Meister's protocol (interactions, 3 spillover words across sentences within the story, only
    missing values excluded, random word folds) on reading times built from surprisal and the previous words' across
    sentences: the held-out ΔLL is the population's within 10 %, and the in-sample one too; every word but each
    story's first three enters the regression."""
    words, indices, documents = stories
    rows, rts, closed_form = built(stories)
    protocol = PROTOCOLS["pimentel_meister_2024"]
    result = evaluate(rows, rts, protocol=protocol, groups=documents, documents=documents, permutations=0)
    assert result["held_out"]["delta_log_likelihood"] == pytest.approx(closed_form, rel=0.1)
    assert result["delta_log_likelihood"] == pytest.approx(closed_form, rel=0.1)
    assert result["excluded_from_regression"] == {"missing_predictors": 3 * 10}
    assert result["held_out"]["fold_scheme"] == "words" and len(result["held_out"]["per_fold"]) == 10
    assert result["protocol"] == {"baseline": "interactions", "spillover": 3, "spillover_scope": "document",
                                  "exclusions": "missing", "folds": "words"}
    word, one_back, *rest = result["surprisal_coefficients_ms_per_bit"]
    assert word == pytest.approx(6, abs=0.5) and one_back == pytest.approx(3, abs=0.5) and all(
        abs(b) < 0.5 for b in rest)
    # the default protocol reads the same words within their sentences: stricter, fewer words, and (its folds whole
    # stories) the same effect within 10 % too
    default = evaluate(rows, rts, groups=documents, documents=documents, permutations=0)
    assert default["regression_words"] < result["regression_words"] - 2000
    assert default["held_out"]["delta_log_likelihood"] == pytest.approx(closed_form, rel=0.1)


def test_each_protocol_choice_does_what_it_says(stories):
    words, indices, documents = stories
    rows, rts, _ = built(stories)

    def run(**fields) -> dict:
        return evaluate(rows, rts, protocol=Protocol(**fields), groups=documents, documents=documents,
                        permutations=0)

    # the scope: a sentence's first words keep their previous words from the sentence before within the story, not
    # across stories (each story's first words lack them)
    across = RegressionWords.of(words, indices, Protocol(spillover=2, spillover_scope="document",
                                                         exclusions="missing"), documents)
    starts = [k for k in range(1, len(words)) if indices[k] == 0 and documents[k] == documents[k - 1]]
    assert all(across.keep[k] for k in starts[:50])
    assert across.base["length_1_back"][starts[0]] == len(words[starts[0] - 1])
    story_starts = [0] + [k for k in range(1, len(words)) if documents[k] != documents[k - 1]]
    assert not any(across.keep[k] or across.keep[k + 1] for k in story_starts) and len(story_starts) == 10
    within = RegressionWords.of(words, indices, Protocol(spillover=2, exclusions="missing"), documents)
    assert not any(within.keep[k] for k in starts) and np.isnan(within.base["length_1_back"][starts[0]])
    # the exclusions: strict also drops words with punctuation and each sentence's first word
    strict, missing = run(spillover_scope="document"), run(spillover_scope="document", exclusions="missing")
    assert missing["excluded_from_regression"] == {"missing_predictors": 20}
    assert strict["excluded_from_regression"]["with_punctuation"] > 1000
    assert strict["regression_words"] == missing["regression_words"] - strict["excluded_from_regression"][
        "with_punctuation"] - strict["excluded_from_regression"]["first_words_of_sentence"]
    # the folds: whole stories, or words at random (a story's words on both sides of a fold)
    by_story, by_word = run()["held_out"], run(folds="words")["held_out"]
    assert (by_story["fold_scheme"], by_word["fold_scheme"]) == ("groups", "words")
    assert by_story["per_fold"] != by_word["per_fold"] and by_word["groups"] == by_story["groups"] == 10
    for bad, message in ((dict(spillover_scope="page"), "--spillover_scope 'page': use one of sentence, document"),
                         (dict(exclusions="none"), "--exclusions 'none': use one of strict, missing"),
                         (dict(folds="stories"), "--folds 'stories': use one of groups, words"),
                         (dict(spillover=-1), "--spillover must be 0 or more")):
        with pytest.raises(ValueError, match=message):
            Protocol(**bad)


def test_the_likelihood_ratio_and_permutation_tests_find_an_effect_and_are_calibrated_on_none(stories):
    """Surprisal that drives the reading times: both tests give their smallest p; shuffled over the corpus (it then
    drives nothing), the likelihood-ratio p is below 0.05 in at most 2 of 20 shuffles and the permutation p in at most
    2 of 10; the permutation p is never 0 and is a multiple of 1/(draws + 1); a seed gives the same p."""
    words, indices, documents = stories
    rows, rts, _ = built(stories)
    driven = evaluate(rows, rts, groups=documents, documents=documents, permutations=199)
    assert driven["likelihood_ratio_test"]["p_value"] < 1e-10 and driven["likelihood_ratio_test"][
        "degrees_of_freedom"] == 3
    assert driven["permutation_test"]["p_value"] == pytest.approx(1 / 200)
    assert driven["likelihood_ratio_test"]["statistic"] == pytest.approx(
        2 * driven["delta_log_likelihood"] * driven["regression_words"])
    rng = np.random.default_rng(1)
    values, times = np.array([r.surprisal for r in rows]), np.array([t for _, t in rts])
    data = RegressionWords.of(words, indices, Protocol(), documents)  # the regression's words, read once

    def shuffled(permutations: int) -> dict:
        return delta_log_likelihood(times, rng.permutation(values), data, groups=documents,
                                    permutations=permutations)

    assert sum(shuffled(0)["likelihood_ratio_test"]["p_value"] < 0.05 for _ in range(20)) <= 2
    permuted = [shuffled(99)["permutation_test"]["p_value"] for _ in range(10)]
    assert sum(p < 0.05 for p in permuted) <= 2 and all(p * 100 == pytest.approx(round(p * 100)) and p > 0 for p in permuted)
    again = evaluate(rows, rts, groups=documents, documents=documents, permutations=199)
    assert again["permutation_test"] == driven["permutation_test"]


def test_a_studys_own_frequencies_from_a_column(tmp_path, stories):
    """--frequency_column: the study's log frequency of each word (here one that drives the reading times beside
    surprisal, which wordfreq's does not know), NA where it has none: that word and the three after it (their
    previous words' frequency) leave the regression, counted; the named protocol and its overrides land in the JSON."""
    words, indices, documents = stories
    rows, rts, _ = built(stories)
    rng = np.random.default_rng(2)
    frequency = rng.normal(-10, 2, len(words))
    lines = NATURAL_STORIES.read_text(encoding="utf-8").splitlines()
    table = tmp_path / "ns.tsv"
    time = lines[0].split("\t").index("meanItemRT")
    with table.open("w", encoding="utf-8") as handle:
        handle.write(lines[0] + "\tmine\tunigram\n")
        for k, (line, row, (_, rt), f) in enumerate(zip(lines[1:], rows, rts, frequency)):
            fields = line.split("\t")
            fields[time] = f"{rt - 15 * f:.3f}"  # driven by the study's frequency too
            handle.write("\t".join([*fields, f"{row.surprisal:.4f}", "NA" if k == 500 else f"{f:.4f}"]) + "\n")
    flags = ["--surprisal_column", "mine", "--input_file", table, "--reading_times", table, "--document_column",
             "item", "--protocol", "pimentel_meister_2024", "--permutations", "0"]
    own = run_surprisal(*flags, "--frequency_column", "unigram", "--output_file", tmp_path / "own" / "ns.tsv")
    wordfreq = run_surprisal(*flags, "--output_file", tmp_path / "wordfreq" / "ns.tsv")
    mine, theirs = own["models"]["mine"], wordfreq["models"]["mine"]
    assert mine["excluded_from_regression"] == {"missing_predictors": 30 + 4}
    assert own["frequency"] == "unigram" and wordfreq["frequency"] == "wordfreq"
    assert own["protocol"] == {"name": "pimentel_meister_2024", **PROTOCOLS["pimentel_meister_2024"].as_dict()}
    assert mine["coefficients"]["frequency"]["estimate"] == pytest.approx(-15, abs=1)
    assert mine["coefficients"]["surprisal"]["estimate"] == pytest.approx(6, abs=0.5)
    assert "frequency" in theirs["coefficients"] and mine["coefficients"] != theirs["coefficients"]
    overridden = run_surprisal(*flags, "--folds", "groups", "--spillover", "1", "--output_file",
                               tmp_path / "over" / "ns.tsv")
    assert overridden["protocol"]["folds"] == "groups" and overridden["protocol"]["spillover"] == 1
    assert overridden["protocol"]["baseline"] == "interactions"
    saved = json.loads((tmp_path / "own" / "ns.reading_times.json").read_text())
    assert saved["protocol"]["name"] == "pimentel_meister_2024"


def test_bad_frequencies_and_protocols_are_refused_naming_them(tmp_path):
    table = tmp_path / "rt.tsv"
    table.write_text("word\tmeanItemRT\tfreq\nThe\t300\t-3.2\ncat\t310\tmany\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"rt.tsv:3: freq='many' is not a frequency"):
        read_frequencies(str(table), "freq")
    with pytest.raises(ValueError, match=r"has no column 'frq'.*--frequency_column"):
        read_frequencies(str(table), "frq")
    empty = tmp_path / "empty.tsv"
    empty.write_text("word\tmeanItemRT\tfreq\nThe\t300\tNA\ncat\t310\t\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"'freq' \(--frequency_column\) has no value"):
        read_frequencies(str(empty), "freq")
    flags = ["--surprisal_column", "freq", "--input_file", table, "--output_file", tmp_path / "out.tsv"]
    with pytest.raises(ValueError, match="--protocol 'pimentel': use one of default, pimentel_meister_2024"):
        run_surprisal(*flags, "--reading_times", table, "--protocol", "pimentel")
    with pytest.raises(ValueError, match="--folds 'story': use one of groups, words"):
        run_surprisal(*flags, "--reading_times", table, "--folds", "story")
    with pytest.raises(ValueError, match="--frequency_column is a column of --reading_times"):
        run_surprisal("--model_name_or_path", "x", "--input_file", table, "--output_file", tmp_path / "o.tsv",
                      "--frequency_column", "freq")
    with pytest.raises(ValueError, match="--permutations must be 0 or more"):
        run_surprisal(*flags, "--reading_times", table, "--permutations", "-1")
