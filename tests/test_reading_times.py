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


def per_reader_fixture(tmp_path, stories, readers=6, words_per_text=200, skip_short=True):
    """An eye-tracking layout (Provo-like): the texts' words (the first `words_per_text` of each of Natural Stories'
    first two stories, with a surprisal column), and a long table of one row per reader and word with two measures
    built from that surprisal (+ 4 and 9 ms/bit), each reader's own offset and noise; with `skip_short`, readers skip
    words of up to 3 letters half the time (0 in both measures), one word is skipped by everyone and some total
    times are not recorded (NA)."""
    words, _, documents = stories
    rng = np.random.default_rng(5)
    picked = [k for story in ("1", "2") for k in [i for i, d in enumerate(documents) if d == story][:words_per_text]]
    surprisal = rng.gamma(2.0, 4.0, len(picked))
    text = tmp_path / "texts.tsv"
    text.write_text("Text_ID\tWord_Number\tWord\tmine\n" + "".join(
        f"{documents[k]}\t{n % words_per_text + 1}\t{words[k]}\t{s:.4f}\n" for n, (k, s) in enumerate(zip(picked, surprisal))),
        encoding="utf-8")
    offsets = rng.normal(0, 40, readers)
    lines = ["Participant_ID\tText_ID\tWord_Number\tWord\tFIRST_FIXATION\tTOTAL_TIME"]
    truth = {"skipped": 0, "not_recorded": 0}
    skips = np.zeros(len(picked), dtype=int)
    for reader in range(readers):
        for n, (k, s) in enumerate(zip(picked, surprisal)):
            first = 200 + offsets[reader] + 4 * s + rng.normal(0, 25)
            total = 260 + offsets[reader] + 9 * s + rng.normal(0, 40)
            skipped = skip_short and (n == 7 or (len(words[k]) <= 3 and rng.random() < 0.5))
            first, total = (0.0, 0.0) if skipped else (first, total)
            truth["skipped"] += skipped
            skips[n] += skipped
            unrecorded = not skipped and rng.random() < 0.03
            truth["not_recorded"] += unrecorded
            lines.append(f"p{reader}\t{documents[k]}\t{n % words_per_text + 1}\t{words[k]}\t{first:.1f}\t"
                         f"{'NA' if unrecorded else f'{total:.1f}'}")
    table = tmp_path / "readers.tsv"
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    truth["skipped_by_all"] = int(np.sum(skips == readers))
    return text, table, truth


def test_a_per_reader_eye_tracking_table_with_several_measures_skips_and_a_mixed_model(tmp_path, stories):
    """--reader_column: a long table of one row per reader and word, two measures: each is fitted averaged over its
    readers (a skipped 0 or an NA leaves that measure, counted; a word everyone skipped leaves the regression, and
    stays in the context) and per reader by a mixed model, whose surprisal coefficient is the one the readings were
    built with."""
    text, table, truth = per_reader_fixture(tmp_path, stories)
    summary = run_surprisal("--surprisal_column", "mine", "--input_file", text, "--reading_times", table,
                            "--document_column", "Text_ID", "--reader_column", "Participant_ID", "--position_column",
                            "Word_Number", "--word_column", "Word", "--rt_column", "FIRST_FIXATION", "TOTAL_TIME",
                            "--mixed_model", "reader", "--permutations", "0", "--output_file", tmp_path / "out" / "x.tsv")
    first = summary["models"]["mine"]
    total = first["measures"]["TOTAL_TIME"]
    assert first["measure"] == "FIRST_FIXATION" and set(first["measures"]) == {"TOTAL_TIME"}
    assert first["readings"] == {"rows": 6 * 400, "skipped": truth["skipped"], "not_recorded": 0,
                                 "read": 6 * 400 - truth["skipped"]}
    assert total["readings"]["not_recorded"] == truth["not_recorded"]
    everyone = truth["skipped_by_all"]  # word 7, and short words every reader happened to skip
    assert everyone >= 1 and first["excluded_from_regression"]["no_reading_time"] == everyone
    assert first["words_with_reading_times"] == 400 - everyone and first["words"] == 400
    for result, slope in ((first, 4), (total, 9)):
        # two texts: the held-out sign flip can say no less than 1/4, the in-sample test can
        assert result["held_out"]["delta_log_likelihood"] > 0.05 and result["likelihood_ratio_test"]["p_value"] < 1e-6
        mixed = result["mixed_model"]
        assert mixed["random_intercepts"] == "reader" and mixed["readers"] == 6
        assert mixed["surprisal_coefficients_ms_per_bit"][0] == pytest.approx(slope, abs=1.0)
        assert mixed["likelihood_ratio_test"]["p_value"] < 1e-10 and mixed["delta_log_likelihood"] > 0
        assert mixed["rows"] < result["readings"]["read"]  # the protocol's exclusions leave the mixed fit too


def test_a_self_paced_per_reader_table_and_the_crossed_mixed_model(tmp_path, stories):
    """The self-paced layout (one RT a reader and word, no skips): crossed random intercepts of readers and words
    give the slope too; a row naming no input word, or another word, is refused naming its line."""
    text, table, _ = per_reader_fixture(tmp_path, stories, readers=4, words_per_text=60, skip_short=False)
    flags = ["--surprisal_column", "mine", "--input_file", text, "--document_column", "Text_ID", "--reader_column",
             "Participant_ID", "--position_column", "Word_Number", "--word_column", "Word", "--permutations", "0"]
    summary = run_surprisal(*flags, "--reading_times", table, "--rt_column", "FIRST_FIXATION", "--mixed_model",
                            "reader+item", "--output_file", tmp_path / "out" / "x.tsv")
    mixed = summary["models"]["mine"]["mixed_model"]
    assert mixed["random_intercepts"] == "reader+item" and mixed["items"] <= 120
    assert mixed["surprisal_coefficients_ms_per_bit"][0] == pytest.approx(4, abs=1.5)
    lines = table.read_text(encoding="utf-8").splitlines()
    fields = lines[1].split("\t")  # Participant_ID, Text_ID, Word_Number, Word, FIRST_FIXATION, TOTAL_TIME

    def changed(column: int, value: str) -> str:
        return "\t".join(value if k == column else field for k, field in enumerate(fields))

    for bad, message in ((changed(2, "999"), r"broken.tsv:2: document '1', Word_Number '999' is no word of the input"),
                         (changed(3, "Zebra"), r"broken.tsv:2: the word is 'Zebra'"),
                         (changed(4, "-5"), r"FIRST_FIXATION='-5' is not a reading")):
        broken = tmp_path / "broken.tsv"
        broken.write_text("\n".join([lines[0], bad, *lines[2:]]) + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            run_surprisal(*flags, "--reading_times", broken, "--rt_column", "FIRST_FIXATION", "--output_file",
                          tmp_path / "bad" / "x.tsv")
    with pytest.raises(ValueError, match="--mixed_model fits each reader's readings: pass the per-reader table"):
        run_surprisal("--surprisal_column", "mine", "--input_file", text, "--reading_times", table, "--mixed_model",
                      "reader", "--output_file", tmp_path / "o.tsv")
    with pytest.raises(ValueError, match="--reader_column reads --reading_times as a per-reader table"):
        run_surprisal("--surprisal_column", "mine", "--input_file", text, "--reading_times", table,
                      "--reader_column", "Participant_ID", "--output_file", tmp_path / "o.tsv")
