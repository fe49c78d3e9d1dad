"""What a reading-time researcher needs beyond plain word surprisal: sliding windows for inputs longer than the
model's positions, the whole story as context, the leading-space correction, held-out ΔLL with spillover and an
interval, and several models in one command. Tiny GPT-2-style models with a byte-level BPE and few positions."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from fusion_lstm_surprisal.sentences import Sentence, read_sentences_of_words
from fusion_lstm_surprisal.surprisal import SurprisalScorer, sliding_windows
from fusion_lstm_training.bpe import build_bpe_tokenizer
from helpers import DATA, ROOT

STORY = "One day a fox came by.\nIt was very hungry.\nIt saw some grapes on a vine.\n\nElsewhere it rained.\nThe end.\n"


@pytest.fixture(scope="module")
def bpe():
    lines = [s for s in (DATA / "train.txt").read_text().splitlines() if s.strip()][:400]
    return build_bpe_tokenizer(lines + STORY.splitlines(), 300)


def tiny_gpt2(tokenizer, positions: int) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=positions, n_embd=32, n_layer=1, n_head=2,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return GPT2LMHeadModel(config).eval()


def log2_softmax(model, ids: list[int]) -> torch.Tensor:
    """log2 p(· | ids) after the last of `ids`, by one forward pass over exactly `ids`."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1].double()
    return torch.log_softmax(logits, -1) / math.log(2)


# ------------------------------------------------------------------------------------------------ sliding windows


def test_windows_score_every_token_once_with_at_least_window_minus_stride_before_it():
    assert sliding_windows(6, 1, 8, 4) == [(0, 6, 1)]  # fits: one piece
    assert sliding_windows(14, 1, 8, 4) == [(0, 8, 1), (4, 12, 8), (8, 14, 12)]
    assert sliding_windows(30, 20, 8, 4) == [(16, 24, 20), (20, 28, 24), (24, 30, 28)]  # windows of context skipped
    for length, first, window, stride in ((50, 1, 8, 3), (50, 17, 10, 5), (9, 1, 8, 7), (100, 60, 16, 1)):
        pieces = sliding_windows(length, first, window, stride)
        scored = [t for _, stop, begin in pieces for t in range(begin, stop)]
        assert scored == list(range(first, length))
        assert all(stop - start <= window and (start == 0 or begin - start >= window - stride)
                   for start, stop, begin in pieces)


def test_a_long_document_is_read_in_windows_and_a_short_one_is_unchanged(bpe):
    model = tiny_gpt2(bpe, positions=8)
    short = Sentence("1", "a fox".split(), "x:1")
    long = Sentence("2", "It saw some grapes on a vine and it was very hungry".split(), "x:2")
    scorer = SurprisalScorer(model, bpe, batch_size=3)  # stride 4
    encoded = [scorer.encode(s) for s in (short, long)]
    assert len(encoded[0].ids) <= 8 < len(encoded[1].ids)
    pieces = scorer.pieces(encoded)
    scores = scorer.token_surprisals(encoded, pieces)
    bits = {p.item: [] for p in pieces}
    for piece, score in zip(pieces, scores):
        bits[piece.item] += score.bits.tolist()
    # the short one: as one pass over BOS and the sentence
    ids = encoded[0].ids
    expected = [-log2_softmax(model, ids[:t])[ids[t]].item() for t in range(1, len(ids))]
    np.testing.assert_allclose(bits[0], expected, rtol=1e-4)
    # the long one: token 10 comes after the window that starts at token 4 (8 positions, 4 apart)
    ids = encoded[1].ids
    assert bits[1][10 - 1] == pytest.approx(-log2_softmax(model, ids[4:10])[ids[10]].item(), rel=1e-4)
    assert bits[1][5 - 1] == pytest.approx(-log2_softmax(model, ids[:5])[ids[5]].item(), rel=1e-4)
    rows = scorer.score([short, long], progress=False)
    assert [r.word for r in rows] == short.words + long.words
    assert scorer.cut_context_tokens == len(ids) - 8  # every token after the first window
    with pytest.raises(ValueError, match="--stride must be at least 1 and less than the model's window \\(8"):
        SurprisalScorer(model, bpe, stride=8)


def test_the_whole_story_so_far_as_context(bpe, tmp_path):
    model = tiny_gpt2(bpe, positions=256)
    story = tmp_path / "story.txt"
    story.write_text(STORY)
    sentences = read_sentences_of_words(str(story))
    scorer = SurprisalScorer(model, bpe, batch_size=2)
    by_sentence = lambda rows, sid: [r.surprisal for r in rows if r.sentence == sid]  # noqa: E731
    whole, two, alone = (scorer.score(sentences, context_sentences=k, progress=False) for k in ("all", 2, 0))
    assert by_sentence(whole, "3") == pytest.approx(by_sentence(two, "3"), rel=1e-5)  # 2 sentences: all of them
    assert by_sentence(whole, "1") == pytest.approx(by_sentence(alone, "1"), rel=1e-5)
    assert by_sentence(whole, "4") == pytest.approx(by_sentence(alone, "4"), rel=1e-5)  # a new story
    assert by_sentence(whole, "5") != pytest.approx(by_sentence(alone, "5"), rel=1e-3)


# ------------------------------------------------------------------------------------- the leading-space correction


def test_the_correction_adds_the_probability_that_the_next_token_begins_a_word(bpe):
    model = tiny_gpt2(bpe, positions=64)
    sentence = Sentence("1", "It saw some grapes.".split(), "x:1")
    plain = SurprisalScorer(model, bpe).score([sentence], progress=False)
    corrected = SurprisalScorer(model, bpe, bow_correction=True).score([sentence], progress=False)
    ids = [bpe.bos_token_id, *bpe(sentence.text, add_special_tokens=False)["input_ids"]]
    tokens = bpe.convert_ids_to_tokens(ids)
    begins = torch.tensor([i for t, i in bpe.get_vocab().items() if t.startswith("Ġ")] + [bpe.eos_token_id])
    word_ends = [t for t in range(1, len(ids)) if t + 1 == len(ids) or tokens[t + 1].startswith("Ġ")]
    assert len(word_ends) == 4 and not tokens[1].startswith("Ġ")  # the first word begins without a space

    def minus_log2_b(position: int) -> float:  # after token `position`
        return -torch.logsumexp(log2_softmax(model, ids[: position + 1])[begins] * math.log(2), 0).item() / math.log(2)

    for w, (p, c) in enumerate(zip(plain, corrected)):
        before = minus_log2_b(word_ends[w - 1]) if w else 0.0  # B before the first word: 1
        expected = p.surprisal + minus_log2_b(word_ends[w]) - before
        assert c.surprisal == pytest.approx(expected, rel=1e-4, abs=1e-4)
        assert c.bow_correction == pytest.approx(c.surprisal - p.surprisal, abs=1e-4)


def test_the_space_marker_of_a_small_byte_level_bpe_is_found(bpe):
    """At 262 tokens this project's BPE keeps "Ġ" apart from the word after it ("a b" → a, Ġ, b): still a marker."""
    from fusion_lstm_surprisal.word_boundary import space_marker, word_begin_ids, word_start_ids

    lines = [s for s in (DATA / "train.txt").read_text().splitlines() if s.strip()][:300]
    small = build_bpe_tokenizer(lines, 262)
    assert small.convert_ids_to_tokens(small("a b", add_special_tokens=False)["input_ids"]) == ["a", "Ġ", "b"]
    assert space_marker(small) == "Ġ" and space_marker(bpe) == "Ġ"
    assert small.convert_tokens_to_ids("Ġ") in word_start_ids(small).tolist()
    rows = SurprisalScorer(tiny_gpt2(small, 64), small, bow_correction=True).score(
        [Sentence("1", "It saw some grapes.".split(), "x:1")], progress=False)
    assert len(rows) == 4 and all(r.bow_correction is not None for r in rows)
    # what the next-word entropy conditions on: the word-initial tokens, without EOS or any special token
    begins = set(word_begin_ids(bpe).tolist())
    assert begins == {i for t, i in bpe.get_vocab().items() if t.startswith("Ġ")} - set(bpe.all_special_ids)
    assert bpe.eos_token_id not in begins and begins < set(word_start_ids(bpe).tolist())


def test_the_correction_is_refused_for_wordpiece(tokenizer):
    with pytest.raises(ValueError, match=r"space marker .*WordPiece.*Drop --bow_correction"):
        SurprisalScorer(tiny_gpt2(tokenizer, positions=16), tokenizer, bow_correction=True)


# ---------------------------------------------------------------------------------- several models in one command


NATURAL_STORIES = ROOT.parent / "shared" / "data" / "natural_stories" / "word_reading_times.tsv"


def run_surprisal(*flags):
    from fusion_lstm_surprisal.score import main

    return main([str(f) for f in flags])


def test_several_models_in_one_command_with_the_story_and_the_correction(bpe, tmp_path):
    lines = NATURAL_STORIES.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    item = header.index("item")
    stories = [lines[0]]  # the start of three stories
    for story in ("1", "2", "3"):
        stories += [line for line in lines[1:] if line.split("\t")[item] == story][:150]
    sample = tmp_path / "stories.tsv"
    sample.write_text("\n".join(stories) + "\n", encoding="utf-8")
    folders = []
    for positions in (16, 32):
        folder = tmp_path / "models" / f"gpt2-{positions}"
        tiny_gpt2(bpe, positions).save_pretrained(folder)
        bpe.save_pretrained(folder)
        folders.append(folder)
    out = tmp_path / "new" / "ns.tsv"  # the folder is made
    summary = run_surprisal("--model_name_or_path", *folders, "--input_file", sample, "--output_file", out,
                            "--reading_times", sample, "--document_column", "item", "--context_sentences", "all",
                            "--bow_correction", "--stride", "6", "--entropy", "--baseline", "interactions",
                            "--spillover", "4")
    assert set(summary["models"]) == {"gpt2-16", "gpt2-32"} and summary["held_out_groups"] == "document"
    assert summary["baseline"] == "interactions" and summary["spillover"] == 4
    for name, result in summary["models"].items():
        rows = list(csv.DictReader((tmp_path / "new" / f"ns.{name}.tsv").open(encoding="utf-8"), delimiter="\t",
                                   quoting=csv.QUOTE_NONE))
        assert [r["word"] for r in rows] == [line.split("\t")[header.index("word")] for line in stories[1:]]
        assert "bow_correction" in rows[0] and result["cut_context_tokens"] > 0 and result["words_per_second"] > 0
        assert all(float(r["entropy"]) > 0 for r in rows) and "held_out" in result["entropy"]
        assert len(result["surprisal_coefficients_ms_per_bit"]) == 5  # the word and 4 spillover words
        assert result["held_out"]["folds"] == 3 and len(result["held_out"]["interval_95"]) == 2
    saved = json.loads(out.with_suffix(".reading_times.json").read_text())
    assert saved["models"]["gpt2-16"]["pearson_r"] == summary["models"]["gpt2-16"]["pearson_r"]
    # the second model against the first, paired by story: the difference of their held-out ΔLLs
    versus = saved["held_out_vs_first"]
    assert versus["reference"] == "gpt2-16" and set(versus["models"]) == {"gpt2-32"}
    difference = versus["models"]["gpt2-32"]
    held_out = {name: result["held_out"]["delta_log_likelihood"] for name, result in summary["models"].items()}
    assert difference["difference"] == pytest.approx(held_out["gpt2-32"] - held_out["gpt2-16"])
    assert difference["groups"] == 3 and 0 < difference["p_value"] <= 1
    assert out.with_suffix(".reading_times.png").read_bytes().startswith(b"\x89PNG")
    assert not out.exists()  # several models: one TSV each, none under the plain name


def test_a_context_without_document_boundaries_is_logged_with_a_likely_column(bpe, tmp_path, caplog):
    tiny_folder = tmp_path / "gpt2"
    tiny_gpt2(bpe, 64).save_pretrained(tiny_folder)
    bpe.save_pretrained(tiny_folder)
    story = tmp_path / "story.tsv"
    story.write_text("item\tzone\tword\n1\t1\tOne.\n1\t2\tTwo.\n2\t1\tThree.\n")
    with caplog.at_level("WARNING", logger="run_surprisal"):
        run_surprisal("--model_name_or_path", str(tiny_folder), "--input_file", str(story), "--context_sentences", "1",
                      "--output_file", str(tmp_path / "out.tsv"))
    assert any("--document_column item" in record.getMessage() for record in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="run_surprisal"):
        run_surprisal("--model_name_or_path", str(tiny_folder), "--input_file", str(story), "--context_sentences", "1",
                      "--document_column", "item", "--output_file", str(tmp_path / "out.tsv"))
    assert not [record for record in caplog.records if "--document_column" in record.getMessage()]


def test_every_models_preconditions_are_checked_before_the_first_is_scored(bpe, tokenizer, tmp_path):
    """A second model's refusal (the correction with WordPiece, a context it was not trained with, a stride its window
    cannot take, a missing model) comes before the first model is scored and written."""
    from helpers import tiny_model

    gpt2, fusion = tmp_path / "gpt2", tmp_path / "fusion"
    tiny_gpt2(bpe, 16).save_pretrained(gpt2)
    bpe.save_pretrained(gpt2)
    tiny_model("concat").save_pretrained(fusion)
    tokenizer.save_pretrained(fusion)
    story = tmp_path / "story.txt"
    story.write_text(STORY)
    out = tmp_path / "out" / "s.tsv"
    for second, flags, message in (
            (fusion, ["--bow_correction"], "Model 'fusion' .*space marker"),
            (fusion, ["--context_sentences", "1"], "Model 'fusion' .*trained sentence by sentence"),
            (gpt2, ["--stride", "40"], "Model 'second/gpt2' .*--stride must be at least 1 and less than the model's"),
            (tmp_path / "empty", [], "Model 'empty' .*")):
        (tmp_path / "empty").mkdir(exist_ok=True)
        first = gpt2 if second != gpt2 else tmp_path / "first" / "gpt2"
        if second == gpt2:  # the stride fits neither: the same model twice under two names
            first.parent.mkdir(exist_ok=True)
            tiny_gpt2(bpe, 64).save_pretrained(first)
            bpe.save_pretrained(first)
            second = tmp_path / "second" / "gpt2"
            tiny_gpt2(bpe, 16).save_pretrained(second)
            bpe.save_pretrained(second)
        with pytest.raises(ValueError, match=message):
            run_surprisal("--model_name_or_path", first, second, "--input_file", story, "--output_file", out, *flags)
        assert not list((tmp_path / "out").glob("*.tsv"))  # the first model was not scored


def test_reading_times_too_few_for_the_regression_are_refused_before_scoring(bpe, tmp_path):
    gpt2 = tmp_path / "gpt2"
    tiny_gpt2(bpe, 16).save_pretrained(gpt2)
    bpe.save_pretrained(gpt2)
    rt = tmp_path / "rt.tsv"
    rows = [("1", w, 300 + 7 * i) for i, w in enumerate("One day a fox came by. It was very hungry.".split())]
    rt.write_text("item\tword\tmeanItemRT\n" + "".join(f"{d}\t{w}\t{t}\n" for d, w, t in rows))
    out = tmp_path / "out" / "s.tsv"
    with pytest.raises(ValueError, match=r"The regression has \d+ words for \d+ predictors: too few to fit"):
        run_surprisal("--model_name_or_path", gpt2, "--input_file", rt, "--reading_times", rt, "--output_file", out)
    rt.write_text("item\tword\tmeanItemRT\n" + "".join(f"{d}\t{w}\t{t + k}\n" for k in range(6) for d, w, t in rows))
    with pytest.raises(ValueError, match="Held-out ΔLL needs at least 2 groups .* got 1"):  # one story
        run_surprisal("--model_name_or_path", gpt2, "--input_file", rt, "--reading_times", rt, "--output_file", out,
                      "--document_column", "item")
    assert not out.exists()  # nothing was scored


def test_a_surprisal_column_is_fitted_against_reading_times_with_no_model_and_beside_models(bpe, tmp_path):
    """Bring your own surprisal: a column of the input (here reading-time-driven numbers and noise) takes the same
    regression and test as a model's; mixed with a model in one command, one JSON compares them."""
    lines = NATURAL_STORIES.read_text(encoding="utf-8").splitlines()
    header, rows = lines[0].split("\t"), [line.split("\t") for line in lines[1:]]
    rt = header.index("meanItemRT")
    rng = np.random.default_rng(0)
    mine = tmp_path / "ns-with-surprisal.tsv"
    mine.write_text("\t".join([*header, "good", "noise"]) + "\n" + "".join(
        "\t".join([*r, f"{(float(r[rt]) - 250) / 20 + rng.normal(0, 1) + 10:.4f}", f"{rng.gamma(2, 4):.4f}"]) + "\n"
        for r in rows), encoding="utf-8")
    out = tmp_path / "out" / "ns.tsv"
    summary = run_surprisal("--surprisal_column", "good", "noise", "--input_file", mine, "--reading_times", mine,
                            "--document_column", "item", "--output_file", out)
    good, noise = summary["models"]["good"], summary["models"]["noise"]
    assert good["held_out"]["p_value"] < 0.01 and good["held_out"]["delta_log_likelihood"] > 0.05
    assert noise["held_out"]["p_value"] > 0.05 and good["surprisal_column"] == "good"
    assert json.loads(out.with_suffix(".reading_times.json").read_text())["models"].keys() == {"good", "noise"}
    assert not out.exists()  # no model, no TSV: the input holds the surprisals
    gpt2 = tmp_path / "gpt2"
    tiny_gpt2(bpe, 64).save_pretrained(gpt2)
    bpe.save_pretrained(gpt2)
    sample = tmp_path / "sample.tsv"  # the first 400 words of three stories, to keep the model's scoring short
    sample.write_text("\n".join(mine.read_text(encoding="utf-8").splitlines()[:401]) + "\n", encoding="utf-8")
    both = run_surprisal("--model_name_or_path", gpt2, "--surprisal_column", "good", "--input_file", sample,
                         "--reading_times", sample, "--output_file", tmp_path / "both" / "ns.tsv")
    assert set(both["models"]) == {"gpt2", "good"}
    bad = tmp_path / "bad.tsv"
    bad.write_text("word\tmeanItemRT\tmine\nThe\t300\t2.5\ncat\t310\tn/a\n")
    with pytest.raises(ValueError, match=r"bad.tsv:3: mine='n/a' is not a surprisal"):
        run_surprisal("--surprisal_column", "mine", "--input_file", bad, "--reading_times", bad, "--output_file",
                      tmp_path / "bad-out.tsv")
    with pytest.raises(ValueError, match="--surprisal_column is fitted against reading times"):
        run_surprisal("--surprisal_column", "mine", "--input_file", bad, "--output_file", tmp_path / "x.tsv")


def test_bad_arguments_are_named_before_any_model_loads(tmp_path):
    sentences = tmp_path / "in.txt"
    sentences.write_text("The cat sat.\n")
    flags = ("--input_file", sentences, "--output_file", tmp_path / "out" / "o.tsv")
    tmp_path = tmp_path / "model"  # an empty folder: no model (and no output may go inside it)
    tmp_path.mkdir()
    with pytest.raises(ValueError, match="--context_sentences must be a number ≥ 0 or 'all', got 'many'"):
        run_surprisal("--model_name_or_path", tmp_path, *flags, "--context_sentences", "many")
    with pytest.raises(FileNotFoundError, match="--model_name_or_path ./nowhere/model: folder not found"):
        run_surprisal("--model_name_or_path", "./nowhere/model", *flags)
    with pytest.raises(ValueError, match="--model_names needs one distinct name per model"):
        run_surprisal("--model_name_or_path", tmp_path, tmp_path / "x", *flags, "--model_names", "a")
    with pytest.raises(ValueError, match="--spillover must be 0 or more"):
        run_surprisal("--model_name_or_path", tmp_path, *flags, "--spillover", "-1")
    (tmp_path / "rt.tsv").write_text("word\tmeanItemRT\nThe\t300\ndog\t310\nsat.\t320\n")
    # the empty folder is no model: the mismatch is found before any model is loaded
    with pytest.raises(ValueError, match="rt.tsv:3: the word is 'dog' but the surprisal row says 'cat'"):
        run_surprisal("--model_name_or_path", tmp_path, *flags, "--reading_times", tmp_path / "rt.tsv")


# -------------------------------------------------------------------------------------------- one reader per family


def test_each_model_family_is_read_by_its_own_reader_and_a_new_family_is_one_entry(bpe, monkeypatch):
    from fusion_lstm_surprisal import readers
    from modeling_fusion_lstm import FusionLSTMConfig

    gpt2 = tiny_gpt2(bpe, positions=8)
    assert readers.reader_class(gpt2.config) is readers.CausalLM and readers.CausalLM.window(gpt2.config) == 8
    fusion = FusionLSTMConfig(fusion="none", context_sentences=2, context_as_tokens=True)
    assert readers.reader_class(fusion) is readers.FusionLM
    assert readers.FusionLM.window(fusion) is None and readers.FusionLM.trained_context(fusion) == 2
    with pytest.raises(ValueError, match="reads at most that many previous sentences, not 3"):
        readers.FusionLM.check_context(fusion, 3)
    readers.CausalLM.check_context(gpt2.config, "all")  # any causal LM reads whatever text it is given

    class Uppercase(readers.CausalLM):
        """A family that reads every sentence in capitals (a stand-in for a new family's own input)."""

        def encode(self, sentence, context):
            return super().encode(Sentence(sentence.id, [w.upper() for w in sentence.words], sentence.source), context)

    monkeypatch.setitem(readers.READERS, "gpt2", Uppercase)
    sentence = Sentence("1", "a fox".split(), "x:1")
    scorer = SurprisalScorer(gpt2, bpe)
    assert isinstance(scorer.reader, Uppercase)
    ids = scorer.encode(sentence).ids
    assert ids == [bpe.bos_token_id, *bpe("A FOX", add_special_tokens=False)["input_ids"]]
    rows = scorer.score([sentence], progress=False)
    expected = [-log2_softmax(gpt2, ids[:t])[ids[t]].item() for t in range(1, len(ids))]
    assert sum(r.surprisal for r in rows) == pytest.approx(sum(expected), rel=1e-4)


def test_flags_and_values_that_would_be_ignored_or_misread_are_refused(tmp_path):
    from fusion_lstm_surprisal.reading_times import decimal_number, read_reading_times
    from fusion_lstm_surprisal.surprisal import output_names

    rt = tmp_path / "rt.tsv"
    rt.write_text("item\tword\tmeanItemRT\tmine\n1\tOne\t300\t2.5\n1\tday.\t1_000\t3\n")
    # --entropy comes from a model: a surprisal column alone has none
    with pytest.raises(ValueError, match="--entropy .* a --surprisal_column carries none"):
        run_surprisal("--surprisal_column", "mine", "--input_file", rt, "--reading_times", rt, "--entropy",
                      "--output_file", tmp_path / "out.tsv")
    # Python's float() reads 1_000 as 1000; a data file's number does not
    assert decimal_number("1_000") is None and decimal_number(" 2.5e3 ") == 2500.0 and decimal_number("inf") is None
    with pytest.raises(ValueError, match=r"rt.tsv:3: meanItemRT='1_000' is not a number"):
        read_reading_times(str(rt))
    # a text file has no columns to name
    text = tmp_path / "story.txt"
    text.write_text("One day.\n")
    for flags in ({"sentence_column": "sent"}, {"word_column": "token"}):
        with pytest.raises(ValueError, match="story.txt is a text file .* drop --sentence_column and --word_column"):
            read_sentences_of_words(str(text), **flags)
    # an input that has both surprisal and model_surprisal gets a third name, not a second model_surprisal
    assert output_names(["word", "surprisal", "model_surprisal"], ["sentence", "surprisal", "tokens"]) == [
        "sentence", "model_model_surprisal", "tokens"]


@pytest.mark.parametrize("flags, message", [
    (["--device", "cuda"], "--device cuda: no cuda device on this machine; use cpu"),
    (["--device", "tpu9"], "--device 'tpu9' is not a device name"),
    (["--model_name_or_path", "MODEL/config.json"], "--model_name_or_path .*config.json is a file: give the folder"),
])
def test_a_device_or_model_that_cannot_work_is_refused_before_any_model_loads(bpe, tmp_path, flags, message):
    if "cuda" in flags and __import__("torch").cuda.is_available():
        pytest.skip("this machine has a cuda device")
    model = tmp_path / "model"
    tiny_gpt2(bpe, 16).save_pretrained(model)
    flags = [str(f).replace("MODEL", str(model)) for f in flags]
    text = tmp_path / "story.txt"
    text.write_text("One day.\n")
    arguments = ["--input_file", text, "--output_file", tmp_path / "out.tsv"]
    if "--model_name_or_path" not in flags:
        arguments += ["--model_name_or_path", model]
    with pytest.raises(ValueError, match=message):
        run_surprisal(*flags, *arguments)


def test_an_error_the_user_causes_ends_in_one_line_not_a_traceback(tmp_path):
    import os
    import subprocess
    import sys

    command = [sys.executable, str(ROOT / "run_surprisal.py"), "--model_name_or_path", str(tmp_path / "nothing"),
               "--input_file", str(ROOT / "README.md"), "--output_file", str(tmp_path / "out.tsv")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: --model_name_or_path {tmp_path / 'nothing'}: folder not "
                                                  "found (a Hub id is owner/name)."]
    shown = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path,
                           env={**os.environ, "FUSION_LSTM_TRACEBACK": "1"})
    assert shown.returncode == 1 and "Traceback" in shown.stderr  # for a bug report


def test_a_surprisal_column_in_nats_is_converted_to_bits(tmp_path):
    import math

    from fusion_lstm_surprisal.score import SurprisalArguments, surprisal_from_column

    tsv = tmp_path / "s.tsv"
    tsv.write_text("item\tword\tnats\n1\tOne\t1.0\n1\tday.\t2.0\n")
    sentences = read_sentences_of_words(str(tsv), document_column="item")
    assert [r.surprisal for r in surprisal_from_column(sentences, "nats", str(tsv), "nats")] == pytest.approx(
        [1 / math.log(2), 2 / math.log(2)])
    assert [r.surprisal for r in surprisal_from_column(sentences, "nats", str(tsv))] == [1.0, 2.0]  # bits: as read
    with pytest.raises(ValueError, match="--surprisal_unit 'log10': use one of bits, nats"):
        SurprisalArguments(input_file=str(tsv), output_file=str(tmp_path / "o.tsv"), surprisal_column=["nats"],
                           reading_times=str(tsv), surprisal_unit="log10")


def test_the_sampled_next_word_entropy_is_the_exact_entropy_of_a_model_whose_words_are_known(bpe, tokenizer,
                                                                                             tmp_path):
    """A bigram model over the BPE: after any token, two word-initial tokens (0.4, 0.3), one continuation (0.2) and
    EOS (0.1). A word is then a first token A or B (given that a word begins: 4/7, 3/7) followed by k continuations
    and an ending (0.2^k · 0.8), so its entropy is known in closed form: the sampled estimate (2,000 words a
    position) is within 0.1 bit of it at every word after the first, a seed gives the same estimates, and the TSV has
    them; a model that embeds text with its encoder's tokenizer is refused."""
    from transformers.modeling_outputs import CausalLMOutput

    from fusion_lstm_surprisal.surprisal import write_tsv
    from fusion_lstm_surprisal.word_boundary import word_begin_ids

    begins = word_begin_ids(bpe).tolist()
    first, second = begins[:2]
    continuation = next(i for t, i in bpe.get_vocab().items() if not t.startswith("Ġ") and i not in bpe.all_special_ids)
    table = torch.full((len(bpe), len(bpe)), -40.0)
    for token, p in ((first, 0.4), (second, 0.3), (continuation, 0.2), (bpe.eos_token_id, 0.1)):
        table[:, token] = math.log(p)
    model = tiny_gpt2(bpe, 64)
    model.forward = lambda input_ids=None, **_: CausalLMOutput(logits=table[input_ids])
    words = [(a, k) for a in (4 / 7, 3 / 7) for k in range(60)]
    exact = -sum(a * 0.2 ** k * 0.8 * math.log2(a * 0.2 ** k * 0.8) for a, k in words)
    sentence = Sentence("1", "It saw some grapes.".split(), "x:1")
    rows = SurprisalScorer(model, bpe, entropy_samples=2000, entropy_seed=3).score([sentence], progress=False)
    assert all(r.entropy_sampled == pytest.approx(exact, abs=0.1) for r in rows[1:]), [r.entropy_sampled for r in rows]
    again = SurprisalScorer(model, bpe, entropy_samples=2000, entropy_seed=3).score([sentence], progress=False)
    assert [r.entropy_sampled for r in again] == [r.entropy_sampled for r in rows]
    write_tsv(rows, tmp_path / "x.tsv")
    header, *lines = (tmp_path / "x.tsv").read_text().splitlines()
    assert header.split("\t")[-2:] == ["entropy", "entropy_sampled"] and len(lines) == 4
    from helpers import TINY
    from modeling_fusion_lstm import FusionLSTMForCausalLM

    own_bpe = FusionLSTMForCausalLM.from_encoder_pretrained(
        fusion="concat", vocab_size=len(bpe), bos_token_id=bpe.bos_token_id, eos_token_id=bpe.eos_token_id,
        pad_token_id=bpe.pad_token_id, **TINY)
    with pytest.raises(ValueError, match="--entropy_samples draws words token by token from a model that reads"):
        SurprisalScorer(own_bpe, bpe, tokenizer, entropy_samples=4)
