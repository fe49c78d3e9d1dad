"""Training data pieces: reading files, sentence samples, the collator, prefix-embedding precompute, schedules."""

import json
import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer

from fusion_lstm_data.batches import FusionDataCollator, pad_right
from fusion_lstm_data.embedder import PrefixEmbedder
from fusion_lstm_data.files import read_sentences
from fusion_lstm_training.bpe import build_bpe_tokenizer
from fusion_lstm_training.callbacks import FusionDropoutSchedule, parse_schedule
from fusion_lstm_training.data import tokenize_sentences
from fusion_lstm_training.embeddings import EmbeddingCache
from fusion_lstm_training.reference import naive_context
from fusion_lstm_training.vectors import BagOfWordsVectors, donors
from modeling_fusion_lstm.prefix_encoder_fusion_lstm import EncoderWindow
from helpers import ROOT, SENTENCES


# -------------------------------------------------------------------------------------------------- reading files


def test_missing_and_empty_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="Data file .*nope.txt does not exist"):
        read_sentences(str(tmp_path / "nope.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match=r"Data file .*empty.txt contains no text"):
        read_sentences(str(empty))


def test_non_utf8_file_is_refused_with_its_line(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("first line\nsecond line\ncaf\u00e9 au lait\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt:3: not UTF-8 text"):
        read_sentences(str(bad))


def test_json_and_csv_need_a_text_column(tmp_path):
    (tmp_path / "ok.jsonl").write_text('{"text": "A sentence."}\n{"text": "Another."}\n')
    assert read_sentences(str(tmp_path / "ok.jsonl")) == ["A sentence.", "Another."]
    (tmp_path / "ok.csv").write_text('id,text\n1,"One, with a comma."\n')
    assert read_sentences(str(tmp_path / "ok.csv")) == ["One, with a comma."]
    (tmp_path / "bad.csv").write_text("id,sentence\n1,x\n")
    with pytest.raises(ValueError, match=r"bad.csv has no `text` column \(columns: id, sentence\)"):
        read_sentences(str(tmp_path / "bad.csv"))


@pytest.mark.parametrize("name, content, where", [
    ("short.csv", "id,text,source\n1,One.,web\n2,Two.\n", "short.csv:3"),
    ("long.csv", "id,text\n1,One.\n2,Two.,extra\n", "long.csv:3"),
    ("missing.jsonl", '{"text": "One."}\n{"sentence": "Two."}\n', "line 2"),
    ("null.jsonl", '{"text": "One."}\n{"text": null}\n', "line 2"),
    ("number.jsonl", '{"text": 3}\n', "line 1"),
    ("broken.jsonl", '{"text": "One."}\n{"text": \n', "broken.jsonl:2"),
    ("records.json", '[{"text": "One."}, {"text": 5}]', "record 1"),
])
def test_malformed_data_files_name_the_file_and_the_record(tmp_path, name, content, where):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=f"{name}.*{where}|{where}"):
        read_sentences(str(tmp_path / name))


def test_json_files_of_every_shape_are_read(tmp_path):
    shapes = {"pretty.json": '{\n  "text": [\n    "One.",\n    "Two."\n  ]\n}\n',
              "records.json": '[{"text": "One."}, {"text": "Two."}]', "lines.json": '{"text": "One."}\n{"text": "Two."}\n'}
    for name, content in shapes.items():
        (tmp_path / name).write_text(content)
        assert read_sentences(str(tmp_path / name)) == ["One.", "Two."], name


def test_a_columnar_json_file_with_lists_of_different_lengths_is_refused(tmp_path):
    path = tmp_path / "columns.json"
    path.write_text(json.dumps({"text": ["One.", "Two.", "Three."], "document": [0, 0]}))
    for column in ("text", "document"):
        with pytest.raises(ValueError, match=r"columns.json: the `text` list has 3 items but `document` has 2"):
            read_sentences(str(path), column)


# ---------------------------------------------------------------------------------------------- sentence samples


def test_sentences_become_bos_to_eos_without_empty_lines_and_truncated(tokenizer):
    data = Dataset.from_dict({"text": ["The cat sat.", "", "   ", "one two three four five six seven eight"]})
    out = tokenize_sentences(data, tokenizer, max_seq_length=6, split="train", keep_offsets=False)
    assert len(out) == 2
    first = out[0]["input_ids"]
    assert first[0] == tokenizer.bos_token_id and first[-1] == tokenizer.eos_token_id
    assert first == tokenizer("The cat sat.")["input_ids"] + [tokenizer.eos_token_id]
    assert len(out[1]["input_ids"]) == 6 and out[1]["input_ids"][0] == tokenizer.bos_token_id


def test_collator_pads_right_with_minus_100_labels_and_zero_embeddings():
    collator = FusionDataCollator(pad_token_id=0)
    features = [
        {"input_ids": [101, 5, 6, 102], "fusion_embeds": [[1.0, 2.0]] * 4},
        {"input_ids": [101, 7], "fusion_embeds": [[3.0, 4.0]] * 2},
    ]
    batch = collator(features)
    assert batch["input_ids"].tolist() == [[101, 5, 6, 102], [101, 7, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[101, 5, 6, 102], [101, 7, -100, -100]]
    assert batch["fusion_embeds"].dtype == torch.float32 and batch["fusion_embeds"][1, 2:].abs().sum() == 0


# ---------------------------------------------------------------------------------------------- prefix embeddings


@pytest.mark.parametrize("context", ["subr", "subl"])
def test_sub_prefix_text_windows_follow_the_models_rule(make_model, tokenizer, context):
    # with the encoder's own vocabulary the text path and the token path read the same tokens
    model = make_model("concat", fusion_context=context, fusion_context_fraction=0.5)
    data = tokenize_sentences(Dataset.from_dict({"text": SENTENCES}), tokenizer, 64, "train", keep_offsets=True)
    for row in data:
        texts = model.prefix_encoder.context.texts(row["text"], row["offsets"])
        ids = torch.tensor(row["input_ids"])
        for j, text in enumerate(texts):
            expected = tokenizer.decode(naive_context(model.config, ids, j)[1:], skip_special_tokens=True)
            # a window may start inside a word: its text is the word's rest, the token is "##rest"
            assert text.lower().replace(" ", "") == expected.replace(" ", "").replace("##", ""), (j, text, expected)


def test_precomputed_embeddings_equal_the_models_own(make_model, tokenizer):
    model = make_model("concat")
    ids = [tokenizer(s)["input_ids"] + [tokenizer.eos_token_id] for s in SENTENCES]
    out = PrefixEmbedder(model.prefix_encoder, tokenizer)({"input_ids": ids})["fusion_embeds"]
    for sentence_ids, stored in zip(ids, out):
        with torch.no_grad():
            expected = model(input_ids=torch.tensor([sentence_ids])).fusion_embeds[0]
        assert stored.dtype == "float16" and stored.shape == tuple(expected.shape)
        torch.testing.assert_close(torch.from_numpy(stored).float(), expected, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("context", [0, 1])
def test_a_character_split_into_byte_tokens_enters_the_window_only_with_its_last_byte(tokenizer, context):
    """Byte-level BPE gives each byte token of a rare character the whole character's offsets: the window at its
    first byte must not hold the character yet (it would see the next token), for the sentence and its context."""
    from fusion_lstm_data.documents import encode_context

    bpe = build_bpe_tokenizer(SENTENCES * 20, vocab_size=300)
    sentence = "The caf\u00e9 \U0001f642 sat."
    data = tokenize_sentences(Dataset.from_dict({"text": [sentence]}), bpe, 64, "train", keep_offsets=True)
    ids, text, ends = data[0]["input_ids"], data[0]["text"], data[0]["offsets"]
    before, context_ids = "", []
    if context:
        row = encode_context(["A na\u00efve cat."], bpe, 128, with_text=True)
        before, context_ids = row["context_text"], row["context_input_ids"]
    windows = EncoderWindow("document" if context else "prefix").texts(text, ends, before)
    tokens = bpe.convert_ids_to_tokens(ids)
    for j in range(len(ids)):  # each window is exactly the characters that tokens 0..j complete
        complete = bpe.decode([*context_ids, *ids[1: j + 1]]).replace("\ufffd", "").replace(bpe.eos_token, "")
        assert "".join(windows[j].split()) == "".join(complete.split()), (j, tokens[j])
    assert {"\u00c3", "\u00f0"} <= set(tokens)  # the rare characters were split into byte tokens


def test_with_a_trained_tokenizer_prefix_embeddings_come_from_the_text(make_model, encoder_path):
    model = make_model("concat")
    encoder_tokenizer = AutoTokenizer.from_pretrained(encoder_path)
    bpe = build_bpe_tokenizer(SENTENCES * 20, vocab_size=300)
    assert len(bpe) == 300 and bpe("The cat")["input_ids"][0] == bpe.bos_token_id
    data = tokenize_sentences(Dataset.from_dict({"text": SENTENCES[:1]}), bpe, 64, "train", keep_offsets=True)
    text, ends = data[0]["text"], data[0]["offsets"]
    assert ends[0] == 0 and ends[-1] == len(text)  # BOS: the empty prefix; EOS: the whole sentence
    embedder = PrefixEmbedder(model.prefix_encoder, bpe, encoder_tokenizer)
    stored = embedder({"text": [text], "offsets": [ends]})["fusion_embeds"][0]
    encoder = model.prefix_encoder.encoder
    for j in (0, 3, len(ends) - 1):
        row = encoder_tokenizer([text[: ends[j]]], return_tensors="pt")  # [CLS] prefix [SEP]
        with torch.no_grad():
            expected = encoder(**row).last_hidden_state[0, 0]
        torch.testing.assert_close(torch.from_numpy(stored[j]).float(), expected, rtol=2e-3, atol=2e-3)


def test_cache_place_changes_with_pooling_data_and_tokenizer(make_model, tokenizer, tmp_path):
    def key(model, data, lm_tokenizer=tokenizer, precision=None):
        embedder = PrefixEmbedder(model.prefix_encoder, lm_tokenizer, autocast_dtype=precision)
        return EmbeddingCache(embedder, tmp_path).view_path(data)

    data = Dataset.from_dict({"input_ids": [[101, 5, 102]]})
    base = key(make_model("concat"), data)
    assert base == key(make_model("concat"), data)
    assert base != key(make_model("concat", encoder_pooling="mean"), data)
    assert base != key(make_model("concat", fusion_context="sentence"), data)
    assert base != key(make_model("concat"), Dataset.from_dict({"input_ids": [[101, 6, 102]]}))
    assert base != key(make_model("concat"), data, lm_tokenizer=build_bpe_tokenizer(SENTENCES * 20, vocab_size=300))
    assert base != key(make_model("concat"), data, precision=torch.bfloat16)


class CountingEmbedder:
    """A PrefixEmbedder that counts the sentences it is asked to embed."""

    def __init__(self, embedder):
        self.embedder, self.width, self.sentences = embedder, embedder.width, 0

    def fingerprint(self):
        return self.embedder.fingerprint()

    def __call__(self, batch):
        self.sentences += len(batch["input_ids"])
        return self.embedder(batch)


class StoppingEmbedder(CountingEmbedder):
    """A CountingEmbedder that fails once it has embedded `limit` sentences: a precompute cut short."""

    def __init__(self, embedder, limit: int):
        super().__init__(embedder)
        self.limit = limit

    def __call__(self, batch):
        if self.sentences >= self.limit:
            raise RuntimeError("killed")
        return super().__call__(batch)


def test_a_precompute_cut_short_resumes_after_its_last_finished_part(make_model, tokenizer, tmp_path, monkeypatch):
    """Parts of 2 sentences: a run stopped during its third part has kept two, and the next run embeds only the 2
    sentences left, into vectors equal to an uninterrupted run's."""
    from fusion_lstm_training import embeddings

    monkeypatch.setattr(embeddings, "SENTENCES_PER_PART", 2)
    inner = PrefixEmbedder(make_model("concat").prefix_encoder, tokenizer)
    texts = [f"Sentence number {i} is about {w}." for i, w in enumerate("cats dogs owls bees ants fish".split())]
    data = tokenize_sentences(Dataset.from_dict({"text": texts}), tokenizer, 64, "train", keep_offsets=False)
    with pytest.raises(RuntimeError, match="killed"):
        EmbeddingCache(StoppingEmbedder(inner, limit=4), tmp_path / "cut").attach(data, "train")
    assert len(list((tmp_path / "cut").rglob("part-*.arrow"))) == 2
    resumed_embedder = CountingEmbedder(inner)
    cache = EmbeddingCache(resumed_embedder, tmp_path / "cut")
    resumed = cache.attach(data, "train")
    assert resumed_embedder.sentences == 2 and (cache.record("train")["embedded"], cache.record("train")["reused"]) == (
        2, 4)
    whole = EmbeddingCache(inner, tmp_path / "whole").attach(data, "train")
    assert resumed["fusion_embeds"] == whole["fusion_embeds"]


def test_cache_embeds_each_sentence_once_across_subsets_runs_and_files(make_model, tokenizer, tmp_path):
    embedder = CountingEmbedder(PrefixEmbedder(make_model("concat").prefix_encoder, tokenizer))
    texts = [f"Sentence number {i} is about {w}." for i, w in enumerate("cats dogs owls bees ants fish".split())]
    data = tokenize_sentences(Dataset.from_dict({"text": texts}), tokenizer, 64, "train", keep_offsets=False)
    full = EmbeddingCache(embedder, tmp_path).attach(data, "train")
    assert embedder.sentences == 6
    subset = EmbeddingCache(embedder, tmp_path).attach(data.select(range(3)), "train")  # a later run, a subset
    assert embedder.sentences == 6
    for row in range(3):
        assert subset[row]["fusion_embeds"] == full[row]["fusion_embeds"]
    other = tokenize_sentences(Dataset.from_dict({"text": [texts[4], "A new one.", "A new one.", texts[0]]}),
                               tokenizer, 64, "validation", keep_offsets=False)
    shared = EmbeddingCache(embedder, tmp_path).attach(other, "validation")  # another file sharing sentences
    assert embedder.sentences == 7  # only "A new one.", once
    assert shared[0]["fusion_embeds"] == full[4]["fusion_embeds"]
    assert shared[3]["fusion_embeds"] == full[0]["fusion_embeds"]
    expected = embedder.embedder({"input_ids": [other[1]["input_ids"]]})["fusion_embeds"][0]
    torch.testing.assert_close(torch.tensor(shared[1]["fusion_embeds"]), torch.from_numpy(expected).float())
    assert shared[2]["fusion_embeds"] == shared[1]["fusion_embeds"]


def test_bfloat16_precompute_stays_close_to_float32(make_model, tokenizer):
    model = make_model("concat")
    ids = [tokenizer(s)["input_ids"] for s in SENTENCES]
    full = PrefixEmbedder(model.prefix_encoder, tokenizer)({"input_ids": ids})["fusion_embeds"]
    half_embedder = PrefixEmbedder(model.prefix_encoder, tokenizer, autocast_dtype=torch.bfloat16)
    half = half_embedder({"input_ids": ids})["fusion_embeds"]
    for a, b in zip(full, half):
        a, b = torch.from_numpy(a).float(), torch.from_numpy(b).float()
        assert torch.nn.functional.cosine_similarity(a, b, dim=-1).min() > 0.99


def test_bfloat16_precompute_computes_what_autocast_on_the_models_own_encoder_does(make_model, tokenizer):
    """The embedder computes with a copy whose linear weights are bfloat16 (no cast at every call): the vectors are
    those of the model's own encoder under autocast, bit for bit, and the model's weights stay float32."""
    from fusion_lstm_data.embedder import linear_weights_in

    model = make_model("concat")
    ids = [tokenizer(s)["input_ids"] for s in SENTENCES]
    embedder = PrefixEmbedder(model.prefix_encoder, tokenizer, autocast_dtype=torch.bfloat16)
    vectors = embedder({"input_ids": ids})["fusion_embeds"]
    padded, mask = pad_right(ids, pad_id=0)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model.prefix_encoder(padded, mask, num_new=padded.shape[1])
    for row, vector in zip(expected, vectors):
        assert np.array_equal(row[: len(vector)].to(torch.float16).numpy(), vector)
    assert embedder.encoder is not model.prefix_encoder
    assert all(p.dtype == torch.float32 for p in model.prefix_encoder.parameters())
    cast = linear_weights_in(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2)), torch.bfloat16)
    assert [p.dtype for p in cast.parameters()] == [torch.bfloat16] * 2 + [torch.float32] * 2


# -------------------------------------------------------------------------------------------- fusion dropout


def test_dropout_schedules():
    assert parse_schedule("0to1") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_schedule("1to0") == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert parse_schedule("0.5,0.25,0") == [0.5, 0.25, 0.0]
    for bad in ("fast", "0.5,2"):
        with pytest.raises(ValueError, match="fusion_dropout_schedule"):
            parse_schedule(bad)
    # levels held for equal parts of training: 10 steps, 5 levels → 2 steps each
    schedule = FusionDropoutSchedule(parse_schedule("0to1"))
    assert [schedule.probability(step, 10) for step in range(10)] == [0, 0, .25, .25, .5, .5, .75, .75, 1, 1]


def test_full_fusion_dropout_in_training_equals_zero_embeddings(batch):
    from modeling_fusion_lstm import FusionLSTMConfig, FusionLSTMForCausalLM

    torch.manual_seed(0)
    config = FusionLSTMConfig(vocab_size=30522, fusion="concat", fusion_embedding_size=8, fusion_dropout=1.0,
                              embedding_size=8, hidden_size=8, projection_size=8)
    model = FusionLSTMForCausalLM(config).train()
    embeds = torch.randn(*batch["input_ids"].shape, 8)
    dropped = model(**batch, fusion_embeds=embeds).logits
    zeros = model(**batch, fusion_embeds=torch.zeros_like(embeds)).logits
    torch.testing.assert_close(dropped, zeros)
    model.eval()  # never in evaluation
    assert not torch.allclose(model(**batch, fusion_embeds=embeds).logits, zeros)
    assert math.isclose(model.config.fusion_dropout, 1.0)
    model.train().set_fusion_dropout(0.0)  # a schedule's rate overrides the config's, which stays as it was
    assert not torch.allclose(model(**batch, fusion_embeds=embeds).logits, zeros)
    assert math.isclose(model.config.fusion_dropout, 1.0)


# ------------------------------------------------------------------------------------------ datasets (Hub/folder)


@pytest.fixture(scope="module")
def run_clm_module():
    """run_clm.py's code (the script is a shell around fusion_lstm_training.clm)."""
    import fusion_lstm_training.clm

    return fusion_lstm_training.clm


def test_paragraphs_are_split_into_sentences_without_headings():
    from fusion_lstm_data.documents import split_into_sentences

    paragraphs = [" = Valkyria Chronicles = ", "", " The game was released in 2011. It sold well! Did it? Yes.",
                  " = = Reception = = ", "Mr. Smith arrived in 1990 . 2 more came.",
                  "'Who are you?' she asked. 'The hedge-king!' Then J. R. R. Tolkien wrote (on paper.) It ended."]
    assert split_into_sentences(paragraphs) == [
        "The game was released in 2011.", "It sold well!", "Did it?", "Yes.",
        "Mr. Smith arrived in 1990 .", "2 more came.",
        "'Who are you?' she asked.", "'The hedge-king!'", "Then J. R. R. Tolkien wrote (on paper.)", "It ended.",
    ]


def test_a_local_dataset_folder_loads_like_a_hub_dataset(tmp_path):
    from fusion_lstm_training.data import load_splits

    folder = tmp_path / "wikitext-like"
    folder.mkdir()
    (folder / "train.txt").write_text(" = Title = \n The first sentence. The second one.\n\n A third.\n")
    (folder / "test.txt").write_text(" A test sentence. And another.\n")
    splits = load_splits(dataset_name=str(folder), split_sentences=True, validation_split_percentage=0)
    assert splits["train"]["text"] == ["The first sentence.", "The second one.", "A third."]
    assert splits["test"]["text"] == ["A test sentence.", "And another."]
    assert "validation" not in splits


def test_config_overrides_are_typed_by_the_config(run_clm_module):
    arguments = run_clm_module.ModelArguments(fusion="add", config_overrides="hidden_size=256,dropout=0.1,"
                                              "freeze_encoder=false")
    assert arguments.config_fields() == {
        "fusion": "add", "encoder_pooling": "cls", "fusion_context": "prefix", "fusion_context_fraction": 0.5,
        "fusion_dropout_mode": "vector", "context_sentences": 0, "context_as_tokens": False, "max_context_length": 128,
        "hidden_size": 256, "dropout": 0.1, "freeze_encoder": False}
    assert run_clm_module.ModelArguments().config_fields()["fusion"] == "concat"
    with pytest.raises(ValueError, match="FusionLSTMConfig.dropout"):  # the values are checked by the config
        run_clm_module.ModelArguments(config_overrides="dropout=1.5")


def parse(run_clm_module, *flags):
    import sys

    argv = sys.argv
    try:
        sys.argv = ["run_clm.py", "--output_dir", "x", *flags]
        return run_clm_module.parse_arguments()
    finally:
        sys.argv = argv


def test_a_cut_short_json_config_is_named(run_clm_module, monkeypatch, tmp_path):
    (tmp_path / "train.json").write_text('{"fusion": "concat", "do_tr')
    monkeypatch.setattr("sys.argv", ["run_clm.py", str(tmp_path / "train.json")])
    with pytest.raises(ValueError, match="train.json: the training configuration is not valid JSON"):
        run_clm_module.parse_arguments()


def test_json_config_becomes_flags_that_later_flags_override(run_clm_module, monkeypatch):
    flags = run_clm_module.json_to_flags({"fusion": "add", "do_eval": True, "report_to": ["none"], "test_file": None})
    assert flags == ["--fusion", "add", "--do_eval", "true", "--report_to", "none"]
    monkeypatch.chdir(ROOT)
    model_args, _, training_args = parse(run_clm_module, *flags, "--validation_file", "data/wikitext2/validation.txt",
                                         "--fusion", "init_h")
    assert model_args.fusion == "init_h" and training_args.do_eval


@pytest.mark.parametrize("flags, exception, names", [
    (["--fusion", "late"], ValueError, "fusion"),
    (["--encoder_pooling", "max"], ValueError, "encoder_pooling"),
    (["--config_overrides", "hidden=3"], ValueError, "config_overrides"),
    (["--config_overrides", "hidden_size"], ValueError, "config_overrides"),
    (["--fusion_dropout_schedule", "fast"], ValueError, "fusion_dropout_schedule"),
    (["--train_tokenizer_vocab_size", "0"], ValueError, "train_tokenizer_vocab_size"),
    (["--dataset_name", "wikitext", "--train_file", "data/wikitext2/train.txt"], ValueError, "dataset_name"),
    (["--train_file", "missing.txt"], FileNotFoundError, "missing.txt"),
    (["--train_file", "data/wikitext2/README.md"], ValueError, "README.md"),
    (["--validation_file", "data/wikitext2/validation.txt", "--do_train", "true"], ValueError, "do_train"),
    (["--max_seq_length", "1"], ValueError, "max_seq_length"),
    (["--per_device_train_batch_size", "0"], ValueError, "per_device_train_batch_size"),
    (["--resume_from_checkpoint", "no-such-checkpoint"], FileNotFoundError, "no-such-checkpoint"),
    (["--fusion_dropout_mode", "rows"], ValueError, "fusion_dropout_mode"),
    (["--fusion_context", "subx"], ValueError, "fusion_context"),
    (["--fusion_context_fraction", "1.5"], ValueError, "fusion_context_fraction"),
    (["--fusion_vectors", "bert"], ValueError, "fusion_vectors"),
    (["--fusion_vectors", "no_such_module:build"], ValueError, "cannot import build from no_such_module"),
    (["--fusion_vectors", "zeros", "--precompute_fusion_embeddings", "false"], ValueError, "precompute"),
    (["--fusion", "none", "--fusion_vectors", "tfidf"], ValueError, "fusion none"),
    (["--fusion", "none", "--eval_without_fusion", "true"], ValueError, "eval_without_fusion"),
    (["--fusion", "none", "--fusion_dropout_schedule", "0to1"], ValueError, "fusion_dropout_schedule"),
    (["--output_dir", "data/wikitext2/train.txt"], FileExistsError, "--output_dir data/wikitext2/train.txt is a file"),
    (["--config_overrides", "hidden_size=abc"], ValueError, "--config_overrides 'hidden_size=abc'"),
    # a field with its own flag, which the data pipeline reads too: the override would reach only the saved config
    (["--config_overrides", "context_sentences=2,context_as_tokens=true"], ValueError, "set it with "
                                                                                        "--context_sentences"),
    (["--config_overrides", "hidden_size=32,max_context_length=8"], ValueError, "set it with --max_context_length"),
    (["--config_overrides", "fusion=none"], ValueError, "set it with --fusion"),
    (["--encoder_name_or_path", "./no/such/encoder"], FileNotFoundError, "--encoder_name_or_path ./no/such/encoder: "
                                                                         "folder not found"),
    (["--model_name_or_path", "/no/such/model"], FileNotFoundError, "--model_name_or_path /no/such/model: folder"),
])
def test_bad_arguments_fail_while_parsing(run_clm_module, monkeypatch, flags, exception, names):
    monkeypatch.chdir(ROOT)
    with pytest.raises(exception, match=names):  # the error names the argument or file at fault
        parse(run_clm_module, *flags)


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "configuration" / "train").glob("*.json")))
def test_every_shipped_training_config_parses_with_the_installed_transformers(run_clm_module, monkeypatch, config):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("sys.argv", ["run_clm.py", f"configuration/train/{config}"])
    model_args, data_args, training_args = run_clm_module.parse_arguments()
    values = json.loads((ROOT / "configuration" / "train" / config).read_text())
    parsed = {**vars(model_args), **vars(data_args), **training_args.to_dict()}
    for name, value in values.items():  # every value arrives where it was meant to go
        got = parsed[name]
        assert (got if not hasattr(got, "value") else got.value) == value or name == "report_to", (name, got)


# ------------------------------------------------------------------------------------------------ vector sources


def test_donors_give_every_sentence_another_of_its_length():
    lengths = [5, 5, 5, 7, 7, 9, 12, 12, 12, 12]
    donor, other_length = donors(lengths, seed=0)
    assert all(d != i for i, d in enumerate(donor)) and sorted(donor) != list(range(10))
    assert other_length == 1 and lengths[donor[5]] in (7, 12)  # the only sentence of 9 borrows from a neighbour
    assert all(lengths[d] == lengths[i] for i, d in enumerate(donor) if i != 5)
    assert donors(lengths, seed=0) == (donor, other_length) and donors(lengths, seed=1)[0] != donor


def test_bag_of_words_vectors_describe_each_prefix(tokenizer):
    source = BagOfWordsVectors("count", ["the cat sat", "the dog sat on the mat"], max_features=5)
    assert source.width == 5
    data = tokenize_sentences(Dataset.from_dict({"text": ["the cat sat on the mat"]}), tokenizer, 64, "train",
                              keep_offsets=True)
    vectors = source({"text": data["text"], "offsets": data["offsets"]})["fusion_embeds"][0]
    assert vectors.shape == (len(data[0]["input_ids"]), 5)
    column = source.vectorizer.vocabulary_
    assert vectors[0].sum() == 0  # BOS: the empty prefix
    assert vectors[-1][column["the"]] == 2 and vectors[-1][column["sat"]] == 1 and vectors[-1][column["cat"]] == 1
    assert vectors[2][column["sat"]] == 0  # "the cat": sat comes later
    tfidf = BagOfWordsVectors("tfidf", ["the cat sat", "the dog sat on the mat"], max_features=5)
    assert tfidf.fingerprint() != source.fingerprint()


class FaultySource:
    """A vector source that returns what `fault` says, for every batch."""

    width = 3

    def __init__(self, fault: str):
        self.fault = fault

    def fingerprint(self) -> str:
        return f"faulty-{self.fault}"

    def __call__(self, batch):
        rows = [np.ones((len(ids), self.width), dtype=np.float32) for ids in batch["input_ids"]]
        if self.fault == "short":
            rows = [r[:-1] for r in rows]
        elif self.fault == "nan":
            rows[0][0, 0] = np.nan
        elif self.fault == "huge":
            rows[0][0, 0] = 1e6
        elif self.fault == "key":
            return {"vectors": rows}
        return {"fusion_embeds": rows}


@pytest.mark.parametrize("fault, message", [("short", r"shape \(4, 3\) for a sentence of 5 tokens"),
                                            ("nan", "NaN or infinite"), ("huge", "beyond float16"),
                                            ("key", "without a 'fusion_embeds' key")])
def test_a_sources_vectors_are_checked_before_anything_is_written(tmp_path, fault, message):
    from fusion_lstm_training.embeddings import EmbeddingCache

    data = Dataset.from_dict({"input_ids": [[1, 2, 3, 4, 5], [1, 2, 3]], "text": ["a b c d", "a b"]})
    with pytest.raises(ValueError, match=f"The vector source FaultySource .*{message}"):
        EmbeddingCache(FaultySource(fault), tmp_path).attach(data, "train")
    assert not list(tmp_path.rglob("*.arrow"))


def test_a_source_of_no_width_or_a_factory_that_is_no_function_is_refused(tmp_path):
    from fusion_lstm_training.vectors import SourceOptions, check_vector_source, make_source

    source = FaultySource("none")
    source.width = 0
    with pytest.raises(ValueError, match="width 0: the width must be a positive integer"):
        check_vector_source(source, "mine")
    with pytest.raises(TypeError, match="names a str, not a factory"):
        make_source("string:ascii_letters", None, [], SourceOptions())


def test_a_factory_that_does_not_take_the_keywords_is_refused_when_it_is_named(tmp_path, monkeypatch):
    """Checked on its signature as the arguments are parsed, not 20 s into the run when it is called."""
    from fusion_lstm_training.vectors import check_source

    (tmp_path / "my_vectors.py").write_text("def build(tok, texts):\n    raise AssertionError('never called')\n\n"
                                            "def fine(tokenizer, train_texts, extra=1):\n    pass\n\n"
                                            "def loose(**kwargs):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TypeError, match=r"called by keyword as attr\(tokenizer=…, train_texts=…\).*\(tok, texts\)"):
        check_source("my_vectors:build")
    check_source("my_vectors:fine")
    check_source("my_vectors:loose")


class IdVectors:
    """A source whose e_j is the token id, twice: each sentence's vectors are its own."""

    width = 2

    def fingerprint(self) -> str:
        return "ids"

    def __call__(self, batch: dict) -> dict:
        return {"fusion_embeds": [np.repeat(np.asarray(ids, dtype=np.float16)[:, None], 2, 1)
                                  for ids in batch["input_ids"]]}


def test_built_in_and_user_sources_are_made_by_one_rule(tmp_path, monkeypatch):
    from fusion_lstm_reproduction.section_tables import SOURCE_LABELS
    from fusion_lstm_training.vectors import (
        SOURCES, ShuffledVectors, SourceOptions, ZeroVectors, make_source, needs_model_encoder, sources_help,
    )

    (tmp_path / "mine.py").write_text("from fusion_lstm_training.vectors import ZeroVectors\n\n"
                                      "def sized(tokenizer, train_texts, max_features):\n"
                                      "    return ZeroVectors(max_features)\n\n"
                                      "def around(tokenizer, train_texts, encoder):\n    return encoder\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    encoder = ZeroVectors(5)
    options = SourceOptions(max_features=7, encoder=encoder, seed=3)
    assert make_source("mine:sized", None, [], options).width == 7  # a user's factory gets the options it names
    assert needs_model_encoder("mine:around") and not needs_model_encoder("mine:sized")
    assert make_source("mine:around", None, [], options) is encoder
    assert needs_model_encoder("encoder") and needs_model_encoder("shuffled") and not needs_model_encoder("zeros")
    assert make_source("encoder", None, None, options) is encoder
    shuffled = make_source("shuffled", None, None, options)
    assert isinstance(shuffled, ShuffledVectors) and shuffled.inner is encoder and shuffled.seed == 3
    assert all(name in sources_help() for name in SOURCES)
    assert all(SOURCE_LABELS[name] == spec.label for name, spec in SOURCES.items() if name != "encoder")


def test_shuffled_wraps_another_source_and_shares_its_cache(tmp_path):
    from fusion_lstm_training.embeddings import embedding_cache
    from fusion_lstm_training.vectors import ShuffledVectors

    data = Dataset.from_dict({"input_ids": [[1, 2, 3], [1, 4, 5], [1, 6, 7], [1, 8]]})
    shuffled = embedding_cache(ShuffledVectors(IdVectors(), seed=0), tmp_path).attach(data, "train")
    plain = embedding_cache(IdVectors(), tmp_path)
    own = plain.attach(data, "train")
    assert len(list(tmp_path.rglob("part-*.arrow"))) == 1  # one embedding, in the inner source's cache, shared
    got = [np.asarray(v)[:, 0].tolist() for v in shuffled["fusion_embeds"]]
    mine = [np.asarray(v)[:, 0].tolist() for v in own["fusion_embeds"]]
    assert mine == [[1, 2, 3], [1, 4, 5], [1, 6, 7], [1, 8]]
    # every sentence of length 3 carries another sentence's vectors of that length; the only one of length 2 borrows
    assert sorted(map(tuple, got[:3])) == sorted(map(tuple, mine[:3])) and all(g != m for g, m in zip(got[:3], mine))
    assert len(got[3]) == 2 and got[3] != mine[3]


def test_encoder_flops_count_the_matrix_products_of_each_window():
    from types import SimpleNamespace

    from fusion_lstm_training.embeddings import encoder_flops

    config = SimpleNamespace(hidden_size=4, intermediate_size=8, num_hidden_layers=2)
    # one window of 3 tokens: per layer 3 tokens × 2·(4·16 + 2·32) weights' FLOPs, plus QKᵀ and AV: 2 · 2·9·4
    per_layer = 3 * 2 * (4 * 16 + 2 * 32) + 2 * 2 * 9 * 4
    assert encoder_flops([3], config) == 2 * per_layer
    assert encoder_flops([3, 3], config) == 2 * encoder_flops([3], config)
    assert encoder_flops([6], config) > 2 * encoder_flops([3], config)  # attention grows with the square
