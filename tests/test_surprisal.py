"""Word surprisal (run_surprisal.py) and the reading-time evaluation: sums of -log2 softmax by hand, words that are
several tokens, [UNK] or carry punctuation, rows kept in order, a GPT-2-style model, batching, bad input, and the
regression on synthetic reading times."""

import csv
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from fusion_lstm_surprisal.reading_figures import draw_delta_bars, reading_times_figure, wrapped
from fusion_lstm_surprisal.reading_times import (
    Protocol, RegressionWords, compare_held_out, delta_log_likelihood, evaluate, predictors, read_reading_times,
)
from fusion_lstm_surprisal.sentences import Sentence, WordSurprisal, align, read_sentences_of_words
from fusion_lstm_surprisal.surprisal import SurprisalScorer, write_tsv
from helpers import ROOT, tiny_model


NATURAL_STORIES = ROOT.parent / "shared" / "data" / "natural_stories" / "word_reading_times.tsv"
TRICKY = "Unbelievableness 🙂 is, as they say, rather odd!"  # several tokens, [UNK], punctuation on words


def run_surprisal(*flags):
    from fusion_lstm_surprisal.score import main

    return main(list(flags))


def sentence_of(text: str):
    from fusion_lstm_surprisal.sentences import Sentence

    return Sentence("1", text.split(), "test:1")


def by_hand(model, tokenizer, sentence: str) -> list[float]:
    """Word surprisals from the model's logits: -log2 softmax of each token after BOS, summed over its word."""
    words = sentence.split()
    encoded = tokenizer(sentence, add_special_tokens=False, return_offsets_mapping=True)
    ids = torch.tensor([[tokenizer.bos_token_id, *encoded["input_ids"]]])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    totals = [0.0] * len(words)
    starts = np.cumsum([0] + [len(w) + 1 for w in words])
    for j, (start, _) in enumerate(encoded["offset_mapping"]):
        word = int(np.searchsorted(starts, start, side="right") - 1)
        totals[word] += -logprobs[j, ids[0, j + 1]].item() / math.log(2)
    return totals


@pytest.mark.parametrize("fusion", ["none", "concat", "init_hc"])
def test_word_surprisal_is_the_sum_of_its_tokens_minus_log2_softmax(tokenizer, fusion):
    model = tiny_model(fusion)
    sentences = [Sentence("1", "The cat sat on the mat.".split(), "x:1"), Sentence("2", TRICKY.split(), "x:2")]
    rows = SurprisalScorer(model, tokenizer, batch_size=2).score(sentences, progress=False)
    assert [r.word for r in rows] == [w for s in sentences for w in s.words]
    for sentence in sentences:
        expected = by_hand(model, tokenizer, sentence.text)
        got = [r.surprisal for r in rows if r.sentence == sentence.id]
        np.testing.assert_allclose(got, expected, rtol=1e-4)
    tokens = {r.word: r.tokens for r in rows}
    assert tokens["Unbelievableness"] >= 2 and tokens["🙂"] == 1 and tokens["is,"] == 2 and tokens["mat."] == 2
    assert tokenizer.convert_ids_to_tokens(tokenizer("🙂", add_special_tokens=False)["input_ids"]) == ["[UNK]"]


def test_batched_equals_one_sentence_at_a_time(tokenizer):
    sentences = read_sentences_of_words(str(NATURAL_STORIES))[:12]
    one = SurprisalScorer(tiny_model("concat"), tokenizer, batch_size=1).score(sentences, progress=False)
    many = SurprisalScorer(tiny_model("concat"), tokenizer, batch_size=8).score(sentences, progress=False)
    assert [(r.sentence, r.word_index, r.word, r.tokens) for r in one] == [
        (r.sentence, r.word_index, r.word, r.tokens) for r in many]
    np.testing.assert_allclose([r.surprisal for r in one], [r.surprisal for r in many], rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("tiny-concat")
    tiny_model("concat").save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_natural_stories_rows_come_out_one_per_word_in_order(tiny_folder, tmp_path):
    rows = list(csv.DictReader(NATURAL_STORIES.open(encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE))
    sample = tmp_path / "stories.tsv"  # the first 300 words: whole sentences and a cut one at the end
    sample.write_text("\n".join(NATURAL_STORIES.read_text(encoding="utf-8").splitlines()[:301]) + "\n")
    out = tmp_path / "out.tsv"
    result = run_surprisal("--model_name_or_path", str(tiny_folder), "--input_file", str(sample), "--output_file",
                           str(out), "--reading_times", str(sample), "--batch_size", "7")
    written = list(csv.DictReader(out.open(encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE))
    assert [r["word"] for r in written] == [r["word"] for r in rows[:300]]
    # every column of the input row comes back, as it was, before the scored ones
    assert list(written[0])[:len(rows[0])] == list(rows[0])
    assert [{c: r[c] for c in rows[0]} for r in written] == rows[:300]
    assert all(float(r["surprisal"]) > 0 and int(r["tokens"]) >= 1 for r in written)
    first_sentence = [r for r in written if r["sentence"] == "1"]
    assert first_sentence[-1]["word"].endswith((".", "?")) and first_sentence[0]["word_index"] == "0"
    saved = json.loads(out.with_suffix(".reading_times.json").read_text())["models"][tiny_folder.name]
    assert saved["words"] == 300 and -1 <= saved["pearson_r"] <= 1
    assert result["models"][tiny_folder.name]["pearson_r"] == saved["pearson_r"]
    assert out.with_suffix(".reading_times.png").read_bytes().startswith(b"\x89PNG")


def test_model_names_as_long_as_a_results_path_stay_inside_the_figure():
    names = ["results/large/document_context/runs/concat_prefix+previous_ctx3_seed0",
             "results/large/document_context/runs/none_seed0", "gpt2"]
    assert wrapped("gpt2") == "gpt2" and all(wrapped(n).replace("\n", "") == n for n in names)
    assert all(len(line) <= 40 for line in wrapped(names[0]).splitlines())
    metrics = [{"held_out": {"delta_log_likelihood": 0.003, "interval_95": [-0.001, 0.008], "p_value": 0.07}}] * 3
    plt, fig, scatter, bars = reading_times_figure(len(names))
    draw_delta_bars(bars, names, metrics)
    fig.canvas.draw()
    texts = [*bars.get_yticklabels(), *bars.texts, bars.xaxis.label]
    assert all(fig.bbox.x0 <= t.get_window_extent().x0 and t.get_window_extent().x1 <= fig.bbox.x1 for t in texts)
    plt.close(fig)


def test_a_gpt2_style_model_with_our_tokenizer(tokenizer, tmp_path):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=24, n_embd=32, n_layer=1, n_head=2,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    (tmp_path / "in.txt").write_text("The cat sat on the mat.\n\n" + TRICKY + "\n")
    run_surprisal("--model_name_or_path", str(tmp_path / "gpt2"), "--input_file", str(tmp_path / "in.txt"),
                  "--output_file", str(tmp_path / "out.tsv"))
    written = list(csv.DictReader((tmp_path / "out.tsv").open(encoding="utf-8"), delimiter="\t",
                                  quoting=csv.QUOTE_NONE))
    assert [r["sentence"] for r in written] == ["1"] * 6 + ["2"] * 8  # the empty line is no sentence
    np.testing.assert_allclose([float(r["surprisal"]) for r in written[:6]],
                               by_hand(model, tokenizer, "The cat sat on the mat."), rtol=1e-4)
    # longer than the model's 24 positions: read in sliding windows (tests/test_surprisal_tools.py), every word scored
    (tmp_path / "long.txt").write_text("ok\n" + " ".join(["word"] * 30) + "\n")
    run_surprisal("--model_name_or_path", str(tmp_path / "gpt2"), "--input_file", str(tmp_path / "long.txt"),
                  "--output_file", str(tmp_path / "x.tsv"))
    assert len((tmp_path / "x.tsv").read_text().splitlines()) == 1 + 31


# ------------------------------------------------------------------------------------------------------ bad input


def test_a_token_across_two_words_is_an_error_naming_the_sentence():
    with pytest.raises(ValueError, match="story.tsv:7: a token .* spans two words"):
        align(Sentence("3", ["ab", "cd"], "story.tsv:7"), [(0, 2), (1, 4)])
    assert align(Sentence("3", ["ab", "cd"], "x"), [(0, 1), (1, 2), (2, 3), (3, 5)]) == [0, 0, 1, 1]


def test_bad_inputs_are_named(tmp_path, tokenizer, encoder_path):
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="empty.txt is empty"):
        read_sentences_of_words(str(tmp_path / "empty.txt"))
    (tmp_path / "nowords.tsv").write_text("item\ttoken\n1\tThe\n")
    with pytest.raises(ValueError, match=r"nowords.tsv has no column 'word' \(columns: item, token\)"):
        read_sentences_of_words(str(tmp_path / "nowords.tsv"))
    (tmp_path / "two.tsv").write_text("word\nThe\ntwo words\n")
    with pytest.raises(ValueError, match="two.tsv:3"):
        read_sentences_of_words(str(tmp_path / "two.tsv"))
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    slow = BertTokenizerLegacy(vocab_file=str(Path(encoder_path) / "vocab.txt"), bos_token="[CLS]")
    assert not slow.is_fast
    with pytest.raises(ValueError, match="not a fast tokenizer"):
        SurprisalScorer(tiny_model("none"), slow)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_sentences_of_words(str(tmp_path / "nope.txt"))
    (tmp_path / "latin1.txt").write_bytes("Fine.\nCaf\xe9 au lait.\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt:2: not UTF-8 text"):
        read_sentences_of_words(str(tmp_path / "latin1.txt"))
    (tmp_path / "tabs.tsv").write_text("sent\tword\na\tHello\na\tthe\tre\n")
    with pytest.raises(ValueError, match="tabs.tsv:3: the row has more fields than the header"):
        read_sentences_of_words(str(tmp_path / "tabs.tsv"), sentence_column="sent")
    (tmp_path / "apart.tsv").write_text("sent\tword\na\tHello\nb\tthere\na\tagain\n")
    with pytest.raises(ValueError, match="apart.tsv:4: sentence 'a' comes back after other sentences"):
        read_sentences_of_words(str(tmp_path / "apart.tsv"), sentence_column="sent")


@pytest.mark.parametrize("value", ["nan", "inf", "-3", ""])
def test_reading_times_that_are_not_reading_times_are_refused_naming_the_line(tmp_path, value):
    path = tmp_path / "rt.tsv"
    path.write_text(f"word\tmeanItemRT\nThe\t300\ncat\t{value}\n")
    with pytest.raises(ValueError, match="rt.tsv:3: meanItemRT="):
        read_reading_times(str(path))


def test_the_output_tsv_gives_back_every_word_exactly(tmp_path):
    words = ['"quoted', "back\\slash", "it's", "«x»", "a,b"]
    rows = [WordSurprisal("1", i, w, 1.5, 1) for i, w in enumerate(words)]
    write_tsv(rows, tmp_path / "out.tsv")
    read = list(csv.DictReader((tmp_path / "out.tsv").open(encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE))
    assert [r["word"] for r in read] == words
    assert [s.words for s in read_sentences_of_words(str(tmp_path / "out.tsv"), sentence_column="sentence")] == [words]


def test_sentences_by_id_column(tmp_path):
    (tmp_path / "ids.tsv").write_text("sent\tword\na\tHello\na\tthere\nb\tNo\nb\tperiod\n")
    sentences = read_sentences_of_words(str(tmp_path / "ids.tsv"), sentence_column="sent")
    assert [(s.id, s.words) for s in sentences] == [("a", ["Hello", "there"]), ("b", ["No", "period"])]


# -------------------------------------------------------------------------------------------- reading times


def synthetic(seed: int, from_surprisal: bool) -> tuple[list[WordSurprisal], list[tuple[str, float]]]:
    """Natural Stories words with made-up surprisals; reading times built from them (or not)."""
    words = [line.split("\t")[2] for line in NATURAL_STORIES.read_text(encoding="utf-8").splitlines()[1:3001]]
    rng = np.random.default_rng(seed)
    surprisal = rng.gamma(2.0, 4.0, len(words))
    indices, sentence_ids, index, sentence = [], [], 0, 1
    for word in words:
        indices.append(index)
        sentence_ids.append(str(sentence))
        index = 0 if word.endswith((".", "?")) else index + 1
        sentence += index == 0
    base = predictors(words, indices)
    rt = 300 + 6 * base["length"] - 8 * base["frequency"] + rng.normal(0, 40, len(words))
    if from_surprisal:
        rt = rt + 5 * surprisal
    rows = [WordSurprisal(s, i, w, float(x), 1) for s, w, i, x in zip(sentence_ids, words, indices, surprisal)]
    return rows, [(w, float(t)) for w, t in zip(words, rt)]


def test_a_constant_or_dependent_predictor_is_refused_naming_it():
    """A rank-deficient regression gives a coefficient and a p-value that mean nothing (a constant surprisal got
    23.6 ms/bit, p = 3e-125): refused, naming the columns."""
    rows, rts = synthetic(0, from_surprisal=True)
    constant = [WordSurprisal(r.sentence, r.word_index, r.word, 7.0, 1) for r in rows]
    with pytest.raises(ValueError, match=r"predictor\(s\) surprisal, surprisal_1_back, surprisal_2_back take a single value"):
        evaluate(constant, rts)
    # a surprisal that is a linear function of the word's length: the design's columns are dependent
    lengths = [WordSurprisal(r.sentence, r.word_index, r.word, 2.0 * len(r.word) + 1, 1) for r in rows]
    with pytest.raises(ValueError, match=r"linearly dependent .*length.*surprisal"):
        evaluate(lengths, rts)


def test_the_results_carry_every_number_a_paper_reports_and_a_seed_reproduces_them():
    rows, rts = synthetic(0, from_surprisal=True)
    result = evaluate(rows, rts, seed=3)
    assert result["formula"].startswith("rt ~ frequency + frequency_1_back") and "surprisal_2_back" in result["formula"]
    assert set(result["coefficients"]) == {"constant", "frequency", "frequency_1_back", "frequency_2_back", "length",
                                           "length_1_back", "length_2_back", "position", "surprisal",
                                           "surprisal_1_back", "surprisal_2_back"}
    surprisal = result["coefficients"]["surprisal"]
    assert surprisal["estimate"] == pytest.approx(result["surprisal_coefficient_ms_per_bit"])
    assert surprisal["standard_error"] == pytest.approx(result["surprisal_standard_errors"][0]) and 0 < surprisal[
        "standard_error"] < 1
    held_out = result["held_out"]
    assert len(held_out["per_fold"]) == held_out["folds"] == 10 and held_out["seed"] == 3
    again, other = evaluate(rows, rts, seed=3)["held_out"], evaluate(rows, rts, seed=4)["held_out"]
    assert again == held_out and other["per_fold"] != held_out["per_fold"]


def test_delta_log_likelihood_finds_surprisal_that_drives_reading_times():
    rows, rts = synthetic(0, from_surprisal=True)
    result = evaluate(rows, rts)
    assert result["delta_log_likelihood"] > 0.05 and result["pearson_r"] > 0.3
    assert 4 < result["surprisal_coefficient_ms_per_bit"] < 6
    # how well the model predicts the corpus: over every word, the regression's exclusions included
    assert result["mean_surprisal_bits"] == pytest.approx(np.mean([r.surprisal for r in rows]))
    held_out = result["held_out"]  # 10 folds of sentences: positive, and so is its whole interval
    assert held_out["folds"] == 10 and held_out["delta_log_likelihood"] > 0.05 and held_out["interval_95"][0] > 0
    shuffled = [WordSurprisal(r.sentence, r.word_index, r.word, s, 1)
                for r, s in zip(rows, random.Random(0).sample([r.surprisal for r in rows], len(rows)))]
    in_sample, held_out = evaluate(shuffled, rts)["delta_log_likelihood"], evaluate(shuffled, rts)["held_out"]
    # in-sample, extra predictors always gain a little; held out, nothing: the interval holds 0
    assert 0 <= in_sample < 0.003 and held_out["delta_log_likelihood"] < in_sample
    assert held_out["interval_95"][0] < 0 < held_out["interval_95"][1]
    none_rows, none_rts = synthetic(1, from_surprisal=False)
    low, high = evaluate(none_rows, none_rts)["held_out"]["interval_95"]
    assert low < 0 < high


def test_the_sign_flip_test_is_calibrated_over_stories():
    """Held out over Natural Stories' 10 stories: a useless (shuffled) surprisal gives p > 0.05 in at least 18 of 20
    shuffles (it loses a little held out, which the one-sided test never reads as an effect); reading times built as
    a + b·surprisal + noise give p < 0.01."""
    rows = list(csv.DictReader(NATURAL_STORIES.open(encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE))
    words, stories = [r["word"] for r in rows], [r["item"] for r in rows]
    rts = [(r["word"], float(r["meanItemRT"])) for r in rows]
    sentences = read_sentences_of_words(str(NATURAL_STORIES), document_column="item")
    indices = [i for s in sentences for i in range(len(s.words))]
    rng = np.random.default_rng(0)
    surprisal = rng.gamma(2.0, 4.0, len(words))

    def p_value(values, times) -> float:
        scored = [WordSurprisal("1", i, w, float(x), 1) for w, i, x in zip(words, indices, values)]
        return evaluate(scored, times, groups=stories, permutations=0)["held_out"]["p_value"]

    useless = [p_value(rng.permutation(surprisal), rts) for _ in range(20)]
    assert sum(p > 0.05 for p in useless) >= 18, useless
    built = [(w, 250 + 6 * x + rng.normal(0, 60)) for w, x in zip(words, surprisal)]
    assert p_value(surprisal, built) < 0.01


def test_the_paired_comparison_finds_the_model_whose_surprisal_drives_reading_times_and_not_a_tie():
    """compare_held_out over Natural Stories' stories: reading times built from one surprisal favour it over a noisy
    copy (p < 0.01, difference > 0) and not the other way round; two shuffles that carry nothing are not told apart
    (p > 0.05); results of different words are refused."""
    rows = list(csv.DictReader(NATURAL_STORIES.open(encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE))
    words, stories = [r["word"] for r in rows], [r["item"] for r in rows]
    sentences = read_sentences_of_words(str(NATURAL_STORIES), document_column="item")
    indices = [i for s in sentences for i in range(len(s.words))]
    rng = np.random.default_rng(1)
    true = rng.gamma(2.0, 4.0, len(words))
    rts = [(w, 250 + 6 * x + rng.normal(0, 60)) for w, x in zip(words, true)]

    def held_out(values, times=rts) -> dict:
        scored = [WordSurprisal("1", i, w, float(x), 1) for w, i, x in zip(words, indices, values)]
        return evaluate(scored, times, groups=stories, permutations=0)["held_out"]

    good, noisy = held_out(true), held_out(true + rng.normal(0, 8, len(words)))
    better = compare_held_out(good, noisy)
    assert better["difference"] > 0 and better["interval_95"][0] > 0 and better["p_value"] < 0.01
    assert compare_held_out(noisy, good)["p_value"] > 0.5
    assert better["difference"] == pytest.approx(good["delta_log_likelihood"] - noisy["delta_log_likelihood"])
    tie = compare_held_out(held_out(rng.permutation(true)), held_out(rng.permutation(true)))
    assert tie["p_value"] > 0.05
    fewer = dict(good, by_group={**good["by_group"], "words": [n - 1 for n in good["by_group"]["words"]]})
    with pytest.raises(ValueError, match="different groups or words"):
        compare_held_out(fewer, noisy)
    with pytest.raises(ValueError, match="per-group gains"):
        compare_held_out({k: v for k, v in good.items() if k != "by_group"}, noisy)


def test_every_surprisal_coefficient_both_baselines_and_entropy_beside_surprisal():
    rows, rts = synthetic(0, from_surprisal=True)  # rt = ... + 5 · surprisal
    previous = np.concatenate([[0.0], [r.surprisal for r in rows][:-1]])
    lagged = [(w, t + 3 * p) for (w, t), p in zip(rts, previous)]  # and + 3 · the previous word's
    result = evaluate(rows, lagged, protocol=Protocol(spillover=2))
    word, one_back, two_back = result["surprisal_coefficients_ms_per_bit"]
    assert 4 < word < 6 and 2 < one_back < 4 and abs(two_back) < 1 and len(result["surprisal_p_values"]) == 3
    words, indices = [r.word for r in rows], [r.word_index for r in rows]
    simple, interactions = (predictors(words, indices, Protocol(b)) for b in ("simple", "interactions"))
    assert "position" in simple and "position" not in interactions
    assert {"length_x_frequency", "length_x_frequency_1_back", "length_x_frequency_2_back"} <= set(interactions)
    np.testing.assert_allclose(interactions["length_x_frequency"], simple["length"] * simple["frequency"])
    assert evaluate(rows, lagged, protocol=Protocol("interactions"))["baseline"] == "interactions"
    with pytest.raises(ValueError, match="--baseline 'fancy': use one of simple, interactions"):
        Protocol("fancy")
    # entropy: what it adds beside surprisal, held out with its own sign-flip test
    rng = np.random.default_rng(1)
    entropy = rng.gamma(3.0, 1.5, len(rows))
    with_entropy = [WordSurprisal(r.sentence, r.word_index, r.word, r.surprisal, 1, None, float(e))
                    for r, e in zip(rows, entropy)]
    driven = [(w, t + 8 * e) for (w, t), e in zip(rts, entropy)]
    found = evaluate(with_entropy, driven)["entropy"]
    assert 6 < found["coefficient_ms_per_bit"] < 10 and found["held_out"]["p_value"] < 0.01
    assert found["held_out"]["delta_log_likelihood"] > 0.01
    assert evaluate(with_entropy, rts)["entropy"]["held_out"]["p_value"] > 0.05  # entropy that drives nothing
    assert "entropy" not in evaluate(rows, rts)


def test_the_scorers_entropy_is_that_of_a_words_first_token_given_that_a_word_begins(tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                                       bos_token_id=tokenizer.bos_token_id)).eval()
    sentence = sentence_of(TRICKY)
    rows = SurprisalScorer(model, tokenizer, entropy=True).score([sentence], progress=False)
    ids = [tokenizer.bos_token_id, *tokenizer(TRICKY, add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
    entropies = (-(logprobs.exp() * logprobs).sum(-1) / math.log(2)).tolist()
    # given that a new word begins: WordPiece's tokens that do not continue a word ("##"), no special token
    begins = [i for token, i in tokenizer.get_vocab().items()
              if not token.startswith("##") and i not in tokenizer.all_special_ids]
    given = logprobs[:, begins] - logprobs[:, begins].logsumexp(-1, keepdim=True)
    conditioned = (-(given.exp() * given).sum(-1) / math.log(2)).tolist()
    first = 1  # the first word's first token is token 1: its distribution is the one at BOS
    for index, row in enumerate(rows):
        expected = entropies[0] if index == 0 else conditioned[first - 1]  # the sentence's first word: as it is
        assert row.entropy == pytest.approx(expected, rel=1e-4)
        assert index == 0 or conditioned[first - 1] != pytest.approx(entropies[first - 1], rel=1e-3)
        first += row.tokens
    assert SurprisalScorer(model, tokenizer).score([sentence], progress=False)[0].entropy is None


def test_spillover_enters_the_regression_and_needs_enough_words():
    rows, rts = synthetic(0, from_surprisal=True)
    previous = np.concatenate([[0.0], [r.surprisal for r in rows][:-1]])
    lagged = [(w, t + 5 * p) for (w, t), p in zip(rts, previous)]  # the previous word's surprisal slows reading too
    none, one = (evaluate(rows, lagged, protocol=Protocol(spillover=k))["held_out"]["delta_log_likelihood"] for k in (0, 1))
    assert one > none + 0.02
    assert evaluate(rows, lagged, protocol=Protocol(spillover=3))["regression_words"] < evaluate(rows, lagged, protocol=Protocol(spillover=1))[
        "regression_words"]
    with pytest.raises(ValueError, match="too few to fit"):
        evaluate(rows[:15], rts[:15], protocol=Protocol(spillover=2))


def test_regression_excludes_sentence_initial_and_punctuated_words():
    words, indices = ["The", "cat's", "well-known", "mat.", "Then", "(x)"], [0, 1, 2, 3, 0, 1]

    def kept(protocol: Protocol) -> list[bool]:
        return RegressionWords.of(words, indices, protocol).keep.tolist()

    assert kept(Protocol(spillover=1)) == [False, True, True, False, False, False]
    assert kept(Protocol()) == [False, False, True, False, False, False]  # spillover 2
    assert kept(Protocol(spillover=0)) == [False, True, True, False, False, False]  # the first word all the same
    rows, rts = synthetic(0, from_surprisal=True)
    counts = {}
    for spillover in (0, 2):
        result = evaluate(rows, rts, protocol=Protocol(spillover=spillover), permutations=0)
        counts[spillover] = excluded = result["excluded_from_regression"]
        assert result["regression_words"] == result["words"] - sum(excluded.values())
    # each word is counted under its first reason: with spillover 2 a sentence's first word lacks its predictors
    assert counts[0]["missing_predictors"] == 0 and counts[0]["first_words_of_sentence"] > 0
    assert counts[2]["missing_predictors"] > counts[0]["first_words_of_sentence"] and counts[2][
        "first_words_of_sentence"] == 0


def test_reading_times_must_list_the_same_words(tmp_path):
    rows, rts = synthetic(0, from_surprisal=True)
    with pytest.raises(ValueError, match="rows"):
        evaluate(rows[:-1], rts)
    with pytest.raises(ValueError, match="rt.tsv:2: the word is"):
        evaluate([WordSurprisal("s", 0, "other", 1.0, 1), *rows[1:]], rts, "rt.tsv")
    delta = delta_log_likelihood(np.array([r for _, r in rts]), np.array([r.surprisal for r in rows]),
                                 RegressionWords.of([w for w, _ in rts], [r.word_index for r in rows], Protocol()))
    assert delta["regression_words"] > 2000


# ------------------------------------------------------------------------------------------- the story so far


def by_hand_after(model, tokenizer, ids: list[int], scored_from: int, **inputs) -> list[float]:
    """-log2 p of every token from position `scored_from` on, one forward pass over `ids`."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), **inputs).logits[0].double()
    logprobs = torch.log_softmax(logits, -1)
    return [-logprobs[j - 1, ids[j]].item() / math.log(2) for j in range(scored_from, len(ids))]


STORY = "One day a fox came.\nIt was hungry.\nIt saw grapes.\n\nElsewhere it rained.\nThe end.\n"


def test_documents_of_a_text_file_and_of_a_tsv_column(tmp_path):
    story = tmp_path / "story.txt"
    story.write_text(STORY)
    assert [s.document for s in read_sentences_of_words(str(story))] == ["0", "0", "0", "1", "1"]
    tsv = tmp_path / "story.tsv"
    tsv.write_text("item\tword\n" + "".join(f"{item}\t{w}\n" for item, w in (
        (1, "A"), (1, "fox."), (1, "It"), (1, "ate"), (2, "Rain"), (2, "fell."))))
    sentences = read_sentences_of_words(str(tsv), document_column="item")
    # a story's last words without a full stop still end its sentence: sentences never span stories
    assert [(s.words, s.document) for s in sentences] == [(["A", "fox."], "1"), (["It", "ate"], "1"),
                                                        (["Rain", "fell."], "2")]
    with pytest.raises(ValueError, match="no column 'story'.*--document_column"):
        read_sentences_of_words(str(tsv), document_column="story")


def test_a_document_is_contiguous_and_may_be_named_by_several_columns(tmp_path):
    """Per-reader rows sorted reader-then-story bring story 1 back after story 2: refused, as is an empty story id;
    naming the reader's column too makes each reader's copy of a story a document of its own."""
    tsv = tmp_path / "readers.tsv"
    rows = [(s, item, w) for s in ("A", "B") for item, w in ((1, "A"), (1, "fox."), (2, "Rain"), (2, "fell."))]
    tsv.write_text("subject\titem\tword\n" + "".join(f"{s}\t{item}\t{w}\n" for s, item, w in rows))
    with pytest.raises(ValueError, match=r"readers.tsv:6 \('item'\): document '1' comes back after other documents"
                                         r".*name the reader's column"):
        read_sentences_of_words(str(tsv), document_column="item")
    sentences = read_sentences_of_words(str(tsv), document_column="item,subject")
    assert [(s.words, s.document) for s in sentences] == [(["A", "fox."], "1/A"), (["Rain", "fell."], "2/A"),
                                                        (["A", "fox."], "1/B"), (["Rain", "fell."], "2/B")]
    with pytest.raises(ValueError, match="no column 'reader'.*--document_column"):
        read_sentences_of_words(str(tsv), document_column="item,reader")
    tsv.write_text("item\tword\n1\tA\n\tfox.\n")
    with pytest.raises(ValueError, match=r"readers.tsv:3 \('item'\): an empty document id"):
        read_sentences_of_words(str(tsv), document_column="item")


def test_a_word_with_a_unicode_line_separator_stays_on_its_row(tmp_path):
    tsv = tmp_path / "odd.tsv"
    tsv.write_text("item\tword\n1\tOne\n1\tw\u2028x\n1\tthen.\n", encoding="utf-8")
    # Python counts U+2028 as whitespace inside a word: refused on its own line (3), not read as two rows
    with pytest.raises(ValueError, match=r"odd.tsv:3: the 'word' column must hold one word, got 'w\\u2028x'"):
        read_sentences_of_words(str(tsv), document_column="item")
    tsv.write_text("item\tword\tnote\n1\tOne\ta\u2028b\n1\tthen.\tc\x85d\n", encoding="utf-8")
    sentences = read_sentences_of_words(str(tsv), document_column="item")
    assert [s.words for s in sentences] == [["One", "then."]]
    assert [row["note"] for row in sentences[0].fields] == ["a\u2028b", "c\x85d"]
    reading = tmp_path / "rt.tsv"
    reading.write_text("word\tmeanItemRT\nOne\t300\nw\u2028x\t310\ny\x85z.\t320\n", encoding="utf-8")
    assert read_reading_times(str(reading)) == [("One", 300.0), ("w\u2028x", 310.0), ("y\x85z.", 320.0)]


def test_any_causal_lm_reads_the_previous_sentences_of_its_document(tokenizer, tmp_path):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = GPT2LMHeadModel(config).eval()
    story = tmp_path / "story.txt"
    story.write_text(STORY)
    sentences = read_sentences_of_words(str(story))
    scorer = SurprisalScorer(model, tokenizer, batch_size=3)
    alone = scorer.score(sentences, progress=False)
    rows = scorer.score(sentences, context_sentences=2, progress=False)
    by_sentence = lambda rs, sid: [r.surprisal for r in rs if r.sentence == sid]  # noqa: E731
    # a document's first sentence scores as without context; later ones read the two before them
    assert by_sentence(rows, "1") == pytest.approx(by_sentence(alone, "1"), rel=1e-5)
    assert by_sentence(rows, "4") == pytest.approx(by_sentence(alone, "4"), rel=1e-5)  # no context across stories
    assert by_sentence(rows, "3") != pytest.approx(by_sentence(alone, "3"), rel=1e-3)
    context = tokenizer("One day a fox came. It was hungry.", add_special_tokens=False)["input_ids"]
    own = tokenizer("It saw grapes.", add_special_tokens=False)["input_ids"]
    bits = by_hand_after(model, tokenizer, [tokenizer.bos_token_id, *context, *own], 1 + len(context))
    words = [r for r in rows if r.sentence == "3"]
    assert sum(r.surprisal for r in words) == pytest.approx(sum(bits), rel=1e-5)
    assert [r.tokens for r in words] == [1, 1, 2]


def test_a_fusion_model_reads_the_context_as_it_was_trained(tokenizer, tmp_path):
    from modeling_fusion_lstm import FusionLSTMForCausalLM
    from helpers import TINY

    torch.manual_seed(0)
    model = FusionLSTMForCausalLM.from_encoder_pretrained(fusion="concat", fusion_context="document",
                                                          context_sentences=2, **TINY).eval()
    story = tmp_path / "story.txt"
    story.write_text(STORY)
    sentences = read_sentences_of_words(str(story))
    rows = SurprisalScorer(model, tokenizer, batch_size=2).score(sentences, progress=False)  # its own K = 2
    eos = tokenizer.eos_token_id
    context = [t for s in ("One day a fox came.", "It was hungry.")
               for t in (*tokenizer(s, add_special_tokens=False)["input_ids"], eos)]
    own = tokenizer("It saw grapes.", add_special_tokens=False)["input_ids"]
    bits = by_hand_after(model, tokenizer, [tokenizer.bos_token_id, *own], 1, context_input_ids=torch.tensor([context]))
    assert sum(r.surprisal for r in rows if r.sentence == "3") == pytest.approx(sum(bits), rel=1e-4)
    # fewer previous sentences (what it saw at every document's start; 0: the same model without the story)
    one = SurprisalScorer(model, tokenizer).score(sentences, context_sentences=1, progress=False)
    context = [*tokenizer("It was hungry.", add_special_tokens=False)["input_ids"], eos]
    bits = by_hand_after(model, tokenizer, [tokenizer.bos_token_id, *own], 1, context_input_ids=torch.tensor([context]))
    assert sum(r.surprisal for r in one if r.sentence == "3") == pytest.approx(sum(bits), rel=1e-4)
    alone = SurprisalScorer(model, tokenizer).score(sentences, context_sentences=0, progress=False)
    bits = by_hand_after(model, tokenizer, [tokenizer.bos_token_id, *own], 1)
    assert sum(r.surprisal for r in alone if r.sentence == "3") == pytest.approx(sum(bits), rel=1e-4)
    for more in (3, "all"):
        with pytest.raises(ValueError, match=rf"trained with context_sentences=2: it reads at most that many previous "
                                             rf"sentences, not {more}"):
            SurprisalScorer(model, tokenizer).score(sentences, context_sentences=more, progress=False)
    with pytest.raises(ValueError, match="trained sentence by sentence"):
        SurprisalScorer(tiny_model("concat"), tokenizer).score(sentences, context_sentences=2, progress=False)


def test_outputs_never_write_over_inputs_and_their_folder_is_made_first(tiny_folder, tmp_path):
    sentences = tmp_path / "in.txt"
    sentences.write_text("The cat sat on the mat.\n")
    with pytest.raises(ValueError, match="would write .*in.txt over or inside --input_file"):
        run_surprisal("--model_name_or_path", str(tiny_folder), "--input_file", str(sentences), "--output_file",
                      str(sentences))
    assert sentences.read_text() == "The cat sat on the mat.\n"
    out = tmp_path / "new" / "deeper" / "out.tsv"  # a folder that does not exist yet
    run_surprisal("--model_name_or_path", str(tiny_folder), "--input_file", str(sentences), "--output_file", str(out))
    assert out.read_text().splitlines()[0].split("\t")[0] == "sentence"
    with pytest.raises(IsADirectoryError, match="is a folder"):
        run_surprisal("--model_name_or_path", str(tiny_folder), "--input_file", str(sentences), "--output_file",
                      str(tmp_path / "new"))


def test_an_output_inside_an_input_folder_or_two_outputs_of_one_path_are_refused(tiny_folder, tmp_path):
    sentences = tmp_path / "in.txt"
    sentences.write_text("The cat sat on the mat.\n")
    config = (tiny_folder / "config.json").read_bytes()
    with pytest.raises(ValueError, match="over or inside --model_name_or_path"):
        run_surprisal("--model_name_or_path", str(tiny_folder), "--input_file", str(sentences), "--output_file",
                      str(tiny_folder / "config.json"))
    assert (tiny_folder / "config.json").read_bytes() == config
    with pytest.raises(ValueError, match="over or inside --encoder_name_or_path"):
        run_surprisal("--model_name_or_path", str(tiny_folder), "--input_file", str(sentences), "--encoder_name_or_path",
                      str(tmp_path), "--output_file", str(tmp_path / "out.tsv"))
    with pytest.raises(ValueError, match="the TSV of model 'x/y' and the TSV of model 'x_y' would both be"):
        run_surprisal("--model_name_or_path", str(tiny_folder), str(tiny_folder), "--model_names", "x/y", "x_y",
                      "--input_file", str(sentences), "--output_file", str(tmp_path / "out.tsv"))
    rt = tmp_path / "rt.tsv"
    rt.write_text("word\tmeanItemRT\nThe\t300\n")
    with pytest.raises(ValueError, match="the TSV of model 'reading_times' and the reading-time summary"):
        run_surprisal("--model_name_or_path", str(tiny_folder), str(tiny_folder), "--model_names", "reading_times",
                      "other", "--input_file", str(rt), "--reading_times", str(rt), "--output_file",
                      str(tmp_path / "out.json"))
    assert not list(tmp_path.glob("out*"))


@pytest.mark.parametrize("value", ["²", "١", "-1", "1.5"])
def test_context_sentences_that_are_not_a_count_are_refused(value, tiny_folder, tmp_path):
    with pytest.raises(ValueError, match="--context_sentences must be a number"):
        run_surprisal("--model_name_or_path", str(tiny_folder), "--input_file", str(NATURAL_STORIES),
                      "--context_sentences", value, "--output_file", str(tmp_path / "out.tsv"))


def test_reading_times_without_variance_or_beyond_any_plausible_range_are_refused(tmp_path):
    flat = tmp_path / "flat.tsv"
    flat.write_text("word\tmeanItemRT\nThe\t300\ncat\t300\nsat\t300\n")
    with pytest.raises(ValueError, match="every meanItemRT is 300: reading times without variance"):
        read_reading_times(str(flat))
    huge = tmp_path / "huge.tsv"
    huge.write_text("word\tmeanItemRT\nThe\t300\ncat\t1e300\n")
    with pytest.raises(ValueError, match="huge.tsv:3: meanItemRT='1e300' is above 1e\\+05"):
        read_reading_times(str(huge))


def test_a_reading_time_file_with_a_bom_is_read_and_one_not_in_utf8_is_named(tmp_path):
    bom = tmp_path / "excel.tsv"
    bom.write_bytes("item\tword\tmeanItemRT\n1\tThe\t300\n1\tcaf\u00e9\t310\n".encode("utf-8-sig"))
    assert read_reading_times(str(bom)) == [("The", 300.0), ("caf\u00e9", 310.0)]
    assert [s.document for s in read_sentences_of_words(str(bom), document_column="item")] == ["1"]
    latin = tmp_path / "latin.tsv"
    latin.write_bytes("word\tmeanItemRT\nThe\t300\ncaf\u00e9\t310\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin.tsv:3: not UTF-8 text"):
        read_reading_times(str(latin))


def test_an_input_column_named_like_a_scored_one_is_kept_and_the_scored_one_prefixed(tmp_path):
    """A TSV that is itself an output (or holds another tool's `surprisal`) keeps its columns as they are; the scored
    columns whose names it has are written as model_<name>."""
    path = tmp_path / "mine.tsv"
    path.write_text("sentence\tword\tsurprisal\ns1\tThe\t3.1\ns1\tcat.\t7.5\n")
    sentences = read_sentences_of_words(str(path), sentence_column="sentence")
    rows = [WordSurprisal("s1", i, w, 2.0 + i, 1) for i, w in enumerate(["The", "cat."])]
    write_tsv(rows, tmp_path / "out.tsv", sentences)
    read = list(csv.DictReader((tmp_path / "out.tsv").open(encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE))
    assert list(read[0]) == ["sentence", "word", "surprisal", "model_sentence", "word_index", "model_surprisal",
                             "tokens"]
    assert [(r["surprisal"], r["model_surprisal"]) for r in read] == [("3.1", "2.000000"), ("7.5", "3.000000")]


def test_natural_stories_splits_into_its_sentences_within_its_stories():
    """The shipped file without a sentence column: sentences end at . ! or ? before any closing quotes (hedge-king!'),
    not inside a quotation that goes on in lower case ('What?' she asked.), and never across stories."""
    sentences = read_sentences_of_words(str(NATURAL_STORIES), document_column="item")
    rows = list(csv.DictReader(NATURAL_STORIES.open(encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE))
    assert sum(len(s.words) for s in sentences) == len(rows)
    assert len(sentences) == 480 and len({s.document for s in sentences}) == 10  # the authors' parse: 485
    assert max(len(s.words) for s in sentences) == 64  # was 110 when only . and ? ended a sentence
    words = [w for s in sentences for w in s.words]
    story_of_word = [s.document for s in sentences for _ in s.words]
    assert story_of_word == [r["item"] for r in rows]  # no sentence runs across two stories
    ends = {s.words[-1] for s in sentences}
    assert any(w.endswith("!'") for w in ends) and any(w.endswith("?'") for w in ends)
    assert not any(w in ("Mr.", "Mrs.") for w in ends) and len(words) == len(rows)


def test_sentence_ids_may_restart_in_each_document(tmp_path):
    path = tmp_path / "stories.tsv"
    path.write_text("item\tsent\tword\n1\t1\tOne\n1\t2\tTwo\n2\t1\tThree\n2\t2\tFour\n2\t1\tBack\n")
    with pytest.raises(ValueError, match="stories.tsv:6: sentence '1' of document '2' comes back"):
        read_sentences_of_words(str(path), sentence_column="sent", document_column="item")
    path.write_text("item\tsent\tword\n1\t1\tOne\n1\t2\tTwo\n2\t1\tThree\n2\t2\tFour\n")
    sentences = read_sentences_of_words(str(path), sentence_column="sent", document_column="item")
    assert [(s.document, s.id, s.words) for s in sentences] == [("1", "1", ["One"]), ("1", "2", ["Two"]),
                                                                ("2", "1", ["Three"]), ("2", "2", ["Four"])]


def test_a_line_too_long_to_read_at_once_is_refused_naming_it(tokenizer, tmp_path):
    (tmp_path / "long.txt").write_text("Fine.\n" + " ".join(["word"] * 5000) + "\n")
    sentences = read_sentences_of_words(str(tmp_path / "long.txt"))
    with pytest.raises(ValueError, match=r"long.txt:2: the sentence has 5,001 tokens .* at most 4,096"):
        SurprisalScorer(tiny_model("none"), tokenizer).score(sentences, progress=False)


def test_a_long_row_of_a_fusion_model_is_announced_and_counted_as_the_work_it_is(tokenizer, tmp_path, caplog):
    """A fusion model's encoder reads every prefix: a row of n tokens costs n(n+1)/2 prefix tokens. The long rows are
    announced with their share, and the progress bar counts that work (its time estimate holds)."""
    (tmp_path / "long.txt").write_text("A short one.\n" + " ".join(["word"] * 300) + ".\n")
    sentences = read_sentences_of_words(str(tmp_path / "long.txt"))
    scorer = SurprisalScorer(tiny_model("concat"), tokenizer)
    with caplog.at_level("WARNING", logger="fusion_lstm_surprisal.surprisal"):
        rows = scorer.score(sentences, progress=False)
    assert len(rows) == 3 + 300
    assert "1 of 2 rows have more than 256 tokens (the longest 302)" in caplog.text and "100 % of the work" in caplog.text
    pieces = scorer.pieces([scorer.encode(s, []) for s in sentences])
    assert [scorer.work(p) for p in pieces] == [5 * 6 // 2, 302 * 303 // 2]  # BOS + tokens, all prefixes
    caplog.clear()
    with caplog.at_level("WARNING", logger="fusion_lstm_surprisal.surprisal"):
        SurprisalScorer(tiny_model("none"), tokenizer).score(sentences, progress=False)
    assert "more than 256 tokens" not in caplog.text  # a plain LSTM reads n tokens for n


def test_an_encoder_tokenizer_that_is_not_the_encoders_is_refused(tokenizer, encoder_path):
    from transformers import AutoTokenizer

    bigger = AutoTokenizer.from_pretrained(encoder_path)
    bigger.add_tokens([f"extra{i}" for i in range(40)])
    with pytest.raises(ValueError, match=r"encoder tokenizer .*30562 tokens.*\(30522 tokens\)"):
        SurprisalScorer(tiny_model("concat", vocab_size=300), tokenizer, bigger)


def test_a_statistic_that_is_not_a_number_is_written_as_null():
    from fusion_lstm_surprisal.score import finite_or_null

    summary = {"models": {"flat": {"pearson_r": float("nan"), "held_out": {"interval_95": [float("-inf"), 0.1]}}}}
    text = json.dumps(finite_or_null(summary), allow_nan=False)
    assert json.loads(text) == {"models": {"flat": {"pearson_r": None, "held_out": {"interval_95": [None, 0.1]}}}}


def test_a_fusion_model_saved_with_older_code_is_scored_with_the_installed_package(tmp_path, tokenizer):
    """The code saved beside a model trained before an API change (e.g. the context's tensors) is not what scores it:
    this project's models load with the installed package, any other model with its own remote code."""
    import copy

    from fusion_lstm_surprisal.score import load_model

    model = copy.deepcopy(tiny_model("concat"))  # the shared one stays as it is
    model.register_for_auto_class("AutoModelForCausalLM")
    model.save_pretrained(tmp_path / "old")
    tokenizer.save_pretrained(tmp_path / "old")
    saved_code = tmp_path / "old" / "modeling_fusion_lstm.py"
    assert saved_code.exists()
    saved_code.write_text("raise ImportError('the code of an older version')\n")
    loaded, _, _ = load_model(str(tmp_path / "old"))
    sentence = Sentence("1", "The cat sat .".split(), "x:1")
    expected = SurprisalScorer(model, tokenizer).score([sentence], progress=False)
    got = SurprisalScorer(loaded, tokenizer).score([sentence], progress=False)
    assert [r.surprisal for r in got] == pytest.approx([r.surprisal for r in expected], rel=1e-5)


def test_a_sampled_sign_flip_p_value_counts_the_observed_signs_and_is_never_zero():
    from fusion_lstm_surprisal.reading_times import SIGN_FLIP_DRAWS, sign_flip_p_value

    gains = np.full(40, 0.01)  # every group gains: no random flip reaches the observed total
    assert sign_flip_p_value(gains, np.random.default_rng(0)) == pytest.approx(1 / (SIGN_FLIP_DRAWS + 1))
    assert sign_flip_p_value(np.full(10, 0.01), np.random.default_rng(0)) == 1 / 1024  # all 2^10 flips, exact


def test_the_corpus_authors_sentences_from_their_aligned_parse(tmp_path):
    """A parse aligned to the corpus' words (TokenId=<story>.<zone>, a blank line between sentences) gives each row
    its sentence, a word split into two tokens (zone 2: "that,") the sentence of its first; the TSV with that column
    reads as the parse's sentences with --sentence_column, where the split rule would have cut after "ended!'"."""
    from fusion_lstm_surprisal.sentences import conllx_sentence_ids, with_sentence_column

    parse = tmp_path / "aligned.conllx"
    parse.write_text("1\tYes\t_\tTokenId=1.1\n2\tthat\t_\tTokenId=1.2.1\n3\t,\t_\tTokenId=1.2.2\n"
                     "4\t'all\t_\tTokenId=1.3\n5\tended!'\t_\tTokenId=1.4\n6\tHe\t_\tTokenId=1.5\n7\tleft.\t_\tTokenId=1.6\n"
                     "\n1\tThen\t_\tTokenId=2.1\n2\tquiet.\t_\tTokenId=2.2\n", encoding="utf-8")
    table = tmp_path / "words.tsv"
    table.write_text("item\tzone\tword\n1\t1\tYes\n1\t2\tthat,\n1\t3\t'all\n1\t4\tended!'\n1\t5\tHe\n1\t6\tleft.\n"
                     "2\t1\tThen\n2\t2\tquiet.\n", encoding="utf-8")
    ids = conllx_sentence_ids(str(parse))
    assert ids[("1", "2")] == ids[("1", "5")] == "1" and ids[("2", "1")] == "2"
    with_sentence_column(str(table), ids, str(tmp_path / "with.tsv"))
    theirs = read_sentences_of_words(str(tmp_path / "with.tsv"), sentence_column="sentence_id", document_column="item")
    ours = read_sentences_of_words(str(table), document_column="item")
    assert [len(s.words) for s in theirs] == [6, 2] and [len(s.words) for s in ours] == [4, 2, 2]
    (tmp_path / "short.conllx").write_text("1\tYes\t_\tTokenId=1.1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"words.tsv:3: item '1', zone '2' is in no sentence of the parse"):
        with_sentence_column(str(table), conllx_sentence_ids(str(tmp_path / "short.conllx")), str(tmp_path / "x.tsv"))
    (tmp_path / "plain.conllx").write_text("1\tYes\t_\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no token with TokenId"):
        conllx_sentence_ids(str(tmp_path / "plain.conllx"))
