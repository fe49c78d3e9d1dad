"""Beyond the sentence: documents in the data (blank lines, a `document` column), each sentence with the previous
sentences of its own document, read by the LSTM as tokens that are conditioned on and never scored."""

import json
import math

import pytest
import torch
from datasets import Dataset

from fusion_lstm_data.batches import FusionDataCollator
from fusion_lstm_data.documents import blank_line_documents, previous_sentences
from fusion_lstm_data.files import read_documents
from fusion_lstm_training.data import load_splits, tokenize_sentences, with_context
from transformers import AutoConfig

from modeling_fusion_lstm import FusionLSTMConfig, FusionLSTMForCausalLM, default_encoder_path
from helpers import DATA, TINY, TINY_OVERRIDES, run_training, tiny_model, tiny_run_config

DOCUMENTS = "\nOne a.\nOne b.\nOne c.\n\n\nTwo a.\n  \nThree a.\nThree b.\n"
SENTENCES = ["One a.", "One b.", "One c.", "Two a.", "Three a.", "Three b."]


def test_blank_lines_separate_documents_for_training_and_surprisal_alike(tmp_path):
    from fusion_lstm_surprisal.sentences import read_sentences_of_words

    path = tmp_path / "docs.txt"
    path.write_text(DOCUMENTS)
    assert read_documents(str(path)) == (SENTENCES, [0, 0, 0, 1, 2, 2])
    assert [(s.text, s.document) for s in read_sentences_of_words(str(path))] == list(
        zip(SENTENCES, ["0", "0", "0", "1", "2", "2"]))
    assert blank_line_documents(["", "a", "", "", "b", "c"]) == [None, 0, None, None, 1, 1]


def test_a_document_column_names_the_documents_of_csv_and_jsonl(tmp_path):
    csv = tmp_path / "docs.csv"
    csv.write_text("document,text\nA,One a.\nA,One b.\nB,Two a.\nC,Three a.\n")
    assert read_documents(str(csv)) == (["One a.", "One b.", "Two a.", "Three a."], [0, 0, 1, 2])
    # a document is contiguous: one that comes back (interleaved or unsorted documents), or an empty id, is refused
    csv.write_text("document,text\nA,One a.\nA,One b.\nB,Two a.\nA,Three a.\n")
    with pytest.raises(ValueError, match=r"docs.csv: record 4: document 'A' comes back after other documents .*"
                                         r"record 1\): .*Sort the file by document"):
        read_documents(str(csv))
    csv.write_text("document,text\nA,One a.\n,One b.\n")
    with pytest.raises(ValueError, match=r"docs.csv: record 2: an empty document id"):
        read_documents(str(csv))
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t, "document": d}) for t, d in (("x.", 7), ("y.", 7), ("z.", 8))))
    assert read_documents(str(jsonl)) == (["x.", "y.", "z."], [0, 0, 1])
    without = tmp_path / "plain.jsonl"
    without.write_text(json.dumps({"text": "x."}) + "\n")
    with pytest.raises(ValueError, match=r"plain.jsonl, line 1: the record has no `document` field.*add a `document`"):
        load_splits(train_file=str(without), validation_split_percentage=0, context_sentences=1)


def test_a_context_asked_of_one_sentence_documents_is_warned_about(tmp_path, caplog):
    jsonl = tmp_path / "interleaved.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": f"Sentence {i}.", "document": i}) for i in range(40)))
    with caplog.at_level("WARNING", logger="fusion_lstm_training.data"):
        load_splits(train_file=str(jsonl), validation_split_percentage=0, context_sentences=2)
    assert "each of its 40 documents has a single sentence: no sentence gets any context" in caplog.text


def test_the_context_is_the_previous_sentences_of_the_same_document():
    contexts = previous_sentences(SENTENCES, [0, 0, 0, 1, 2, 2], 2)
    assert contexts == [[], ["One a."], ["One a.", "One b."], [], [], ["Three a."]]
    assert previous_sentences(SENTENCES, [0, 0, 0, 1, 2, 2], 1)[2] == ["One b."]


def test_a_subset_keeps_each_sentences_context(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text(DOCUMENTS)
    splits = load_splits(train_file=str(path), validation_file=str(path), max_train_samples=3, max_eval_samples=6,
                         context_sentences=2)
    assert splits["train"]["text"] == SENTENCES[:3]  # the first sentences of the file
    assert splits["train"]["context"][2] == ["One a.", "One b."]
    assert splits["validation"]["document"] == [0, 0, 0, 1, 2, 2]
    sentence_level = load_splits(train_file=str(path), validation_split_percentage=0, max_train_samples=4)["train"]
    assert "context" not in sentence_level.column_names
    assert sentence_level["text"] == SENTENCES[:4]  # the same sentences as with context: blank lines are not samples


def test_the_context_travels_as_its_own_tokens_conditioned_on_but_never_scored(tokenizer):
    data = Dataset.from_dict({"text": SENTENCES[:3], "document": [0, 0, 0],
                              "context": previous_sentences(SENTENCES[:3], [0, 0, 0], 2)})
    sentence_level = tokenize_sentences(data, tokenizer, 32, "train", keep_offsets=False)
    rows = with_context(sentence_level, tokenizer, max_context_length=64, split="train")
    eos = tokenizer.eos_token_id
    one_a = tokenizer("One a.", add_special_tokens=False)["input_ids"]
    one_b = tokenizer("One b.", add_special_tokens=False)["input_ids"]
    assert rows["input_ids"] == sentence_level["input_ids"]  # the sample is the sentence alone, as sentence-level
    assert rows["context_input_ids"] == [[], [*one_a, eos], [*one_a, eos, *one_b, eos]]
    # the most recent context tokens are kept
    cut = with_context(sentence_level, tokenizer, max_context_length=len(one_b) + 1, split="train")
    assert cut[2]["context_input_ids"] == [*one_b, eos]

    batch = FusionDataCollator(pad_token_id=tokenizer.pad_token_id)([rows[i] for i in range(3)])
    assert batch["context_attention_mask"].sum(1).tolist() == [0, len(one_a) + 1, len(one_a) + len(one_b) + 2]
    assert batch["context_input_ids"].shape == batch["context_attention_mask"].shape
    assert batch["labels"].shape == batch["input_ids"].shape
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    model = FusionLSTMForCausalLM(FusionLSTMConfig(vocab_size=len(tokenizer), fusion="none", context_sentences=2,
                                                   context_as_tokens=True, **TINY)).eval()
    with torch.no_grad():
        out = model(**batch)
        without = model(**{k: v for k, v in batch.items() if not k.startswith("context_")})
        logits = out.logits[:, :-1]
        targets = batch["labels"][:, 1:]
        by_hand = torch.nn.functional.cross_entropy(logits[targets != -100], targets[targets != -100])
    torch.testing.assert_close(out.loss, by_hand)
    assert out.logits.shape == without.logits.shape  # no position for the context
    assert torch.allclose(out.logits[0], without.logits[0])  # an empty context: sentence-level
    assert not torch.allclose(out.logits[2, :3], without.logits[2, :3])  # the LSTM read the context


def test_the_config_records_the_context_and_refuses_what_nothing_reads():
    config = FusionLSTMConfig(fusion="none", context_sentences=3, context_as_tokens=True)
    assert FusionLSTMConfig.from_dict(config.to_dict()).context_sentences == 3
    with pytest.raises(ValueError, match="context_sentences: nothing reads the context"):
        FusionLSTMConfig(fusion="none", context_sentences=2)
    with pytest.raises(ValueError, match="context_as_tokens needs context_sentences"):
        FusionLSTMConfig(fusion="none", context_as_tokens=True)
    with pytest.raises(ValueError, match="embeds the previous sentences of the document: set context_sentences"):
        FusionLSTMConfig(fusion="concat", fusion_context="previous")
    with pytest.raises(ValueError, match="with fusion='none': nothing is fused"):
        FusionLSTMConfig(fusion="none", fusion_context="document", context_sentences=1)
    with pytest.raises(ValueError, match="sentence-level probe"):
        FusionLSTMConfig(fusion="concat", fusion_context="subr", context_sentences=1, context_as_tokens=True)
    assert FusionLSTMConfig(fusion="concat", fusion_context="previous", context_sentences=1).context_as_tokens is False
    with pytest.raises(ValueError, match="context_sentences must be 0 or more"):
        FusionLSTMConfig(fusion="none", context_sentences=-1)


def test_run_clm_trains_with_the_previous_sentences_as_tokens(tmp_path):
    lines = [s for s in (DATA / "train.txt").read_text().splitlines() if s.strip()][:80]
    documents = tmp_path / "documents.txt"
    documents.write_text("\n\n".join("\n".join(lines[i : i + 8]) for i in range(0, len(lines), 8)) + "\n")
    config = tiny_run_config(tmp_path / "out", tmp_path / "cache", fusion="none", train_file=str(documents),
                             validation_file=str(documents), max_eval_samples=40, context_sentences=2,
                             context_as_tokens=True, config_overrides=TINY_OVERRIDES)
    result = run_training(config, tmp_path)
    assert "40 sentences in 5 documents" in result.log or "80 sentences in 10 documents" in result.log
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["context_sentences"] == 2 and saved["context_as_tokens"] is True
    metrics = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert math.isfinite(metrics["eval_perplexity"]) and metrics["eval_perplexity"] > 1
    # continuing from the checkpoint reads the context as it was trained; contradicting it is refused
    again = {**config, "model_name_or_path": str(tmp_path / "out"), "output_dir": str(tmp_path / "again"),
             "fusion": None, "config_overrides": None, "context_sentences": 1}
    refused = run_training(again, tmp_path, check=False)
    assert refused.returncode != 0 and "was trained with context_sentences=2" in refused.log


# ------------------------------------------------------------------------------- the document's context in the model


def context_model(fusion, mode, as_tokens=False, seed=0):
    from modeling_fusion_lstm import FusionLSTMForCausalLM as Model

    torch.manual_seed(seed)
    return Model.from_encoder_pretrained(fusion=fusion, fusion_context=mode, context_sentences=2,
                                         context_as_tokens=as_tokens, **TINY).eval()


def document_row(tokenizer, context: list[str], sentence: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The sentence (BOS, its tokens, EOS) and its context (each context sentence's tokens and EOS)."""
    eos = tokenizer.eos_token_id
    tokens = [t for s in context for t in (*tokenizer(s, add_special_tokens=False)["input_ids"], eos)]
    own = tokenizer(sentence, add_special_tokens=False)["input_ids"]
    return torch.tensor([tokenizer.bos_token_id, *own, eos]), torch.tensor(tokens, dtype=torch.long)


MODES = [("concat", "previous", False), ("concat", "document", False), ("init_hc", "document", False),
         ("concat", "prefix+previous", False), ("multiply", "prefix+previous", True),
         ("add", "previous", True), ("concat", "prefix", True), ("init_h", "prefix", True)]


@pytest.mark.parametrize("fusion, mode, as_tokens", MODES)
def test_each_context_mode_matches_the_naive_reference(tokenizer, fusion, mode, as_tokens):
    from fusion_lstm_training.reference import naive_logits

    model = context_model(fusion, mode, as_tokens)
    ids, context = document_row(tokenizer, ["The river rose.", "Boats were tied up."], "The town waited for news.")
    with torch.no_grad():
        fast = model(input_ids=ids[None], context_input_ids=context[None]).logits[0]
        slow = naive_logits(model, ids, context)
    assert fast.shape == (len(ids), model.config.vocab_size)  # a position per token of the sentence, none for context
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("fusion, mode, as_tokens", MODES)
def test_a_position_sees_neither_later_tokens_nor_anything_after_its_sentence(tokenizer, fusion, mode, as_tokens):
    model = context_model(fusion, mode, as_tokens)
    ids, context = document_row(tokenizer, ["The river rose.", "Boats were tied up."], "The town waited for news.")
    j = 3
    changed = ids.clone()
    changed[j + 1 :] = torch.randint(1000, 2000, (len(ids) - j - 1,))
    with torch.no_grad():
        a = model(input_ids=ids[None], context_input_ids=context[None]).logits[0, : j + 1]
        b = model(input_ids=changed[None], context_input_ids=context[None]).logits[0, : j + 1]
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("as_tokens", [False, True])
def test_the_lstm_reads_the_context_only_as_tokens(tokenizer, as_tokens):
    model = context_model("concat", "previous", as_tokens)
    ids, context = document_row(tokenizer, ["The river rose.", "Boats were tied up."], "The town waited.")
    other = torch.randint(1000, 2000, context.shape)  # another context, the same e_j given
    e = torch.randn(1, len(ids), model.config.fusion_embedding_size)
    with torch.no_grad():
        a = model(input_ids=ids[None], fusion_embeds=e, context_input_ids=context[None]).logits[0]
        b = model(input_ids=ids[None], fusion_embeds=e, context_input_ids=other[None]).logits[0]
    assert torch.allclose(a, b) != as_tokens


@pytest.mark.parametrize("as_tokens", [False, True])
def test_padded_contexts_and_sentences_give_each_rows_own_logits(tokenizer, as_tokens):
    model = context_model("concat", "prefix+previous", as_tokens)
    long_ids, long_context = document_row(tokenizer, ["The river rose.", "Boats were tied up."], "The town waited.")
    short_ids, short_context = document_row(tokenizer, ["Rain."], "It fell for a week and a day.")
    ids = torch.nn.utils.rnn.pad_sequence([long_ids, short_ids], batch_first=True)
    mask = torch.nn.utils.rnn.pad_sequence([torch.ones_like(long_ids), torch.ones_like(short_ids)], batch_first=True)
    contexts = torch.nn.utils.rnn.pad_sequence([long_context, short_context], batch_first=True)
    context_mask = torch.nn.utils.rnn.pad_sequence([torch.ones_like(long_context), torch.ones_like(short_context)],
                                                   batch_first=True)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, context_input_ids=contexts,
                    context_attention_mask=context_mask).logits
        for row, (own, context) in enumerate([(long_ids, long_context), (short_ids, short_context)]):
            alone = model(input_ids=own[None], context_input_ids=context[None]).logits[0]
            torch.testing.assert_close(out[row, : len(own)], alone, atol=1e-5, rtol=1e-5)


def test_previous_embeds_the_context_once_for_the_whole_sentence_and_no_context_is_sentence_level(tokenizer):
    model = context_model("concat", "previous")
    ids, context = document_row(tokenizer, ["The river rose.", "Boats were tied up."], "The town waited.")
    with torch.no_grad():
        out = model(input_ids=ids[None], context_input_ids=context[None])
    e = out.fusion_embeds[0]
    assert torch.allclose(e, e[0].expand_as(e))  # one vector for the sentence
    # a document's first sentence: document reads the sentence's prefixes alone, an empty context as none at all
    document = context_model("concat", "document")
    sentence_level = FusionLSTMForCausalLM.from_encoder_pretrained(fusion="concat", **TINY).eval()
    sentence_level.load_state_dict(document.state_dict())
    empty = torch.zeros(1, 0, dtype=torch.long)
    with torch.no_grad():
        expected = sentence_level(input_ids=ids[None]).logits
        torch.testing.assert_close(document(input_ids=ids[None], context_input_ids=empty).logits, expected)
        torch.testing.assert_close(document(input_ids=ids[None]).logits, expected)


@pytest.mark.parametrize("mode, as_tokens", [("previous", False), ("document", False), ("prefix+previous", False),
                                             ("previous", True)])
def test_generation_with_context_caches_as_it_recomputes(tokenizer, mode, as_tokens):
    model = context_model("concat", mode, as_tokens)
    ids, context = document_row(tokenizer, ["The river rose.", "Boats were tied up."], "The town")
    prompt = ids[:-1][None]  # without the final EOS: the sentence goes on
    cached = model.generate(prompt, context_input_ids=context[None], max_new_tokens=6, do_sample=False)
    full = model.generate(prompt, context_input_ids=context[None], max_new_tokens=6, do_sample=False,
                          use_cache=False)
    assert torch.equal(cached, full) and cached.shape[1] == prompt.shape[1] + 6
    # each step conditions on the context: greedy decoding from the naive reference picks the same tokens
    from fusion_lstm_training.reference import naive_logits

    with torch.no_grad():
        for step in range(prompt.shape[1], cached.shape[1]):
            assert int(naive_logits(model, cached[0, :step], context)[-1].argmax()) == int(cached[0, step])


@pytest.mark.parametrize("mode", ["previous", "document", "prefix"])
def test_the_text_windows_read_the_tokens_the_model_reads(tokenizer, mode):
    from fusion_lstm_training.reference import naive_context
    from modeling_fusion_lstm import EncoderWindow

    data = Dataset.from_dict({"text": SENTENCES[:3], "document": [0, 0, 0],
                              "context": previous_sentences(SENTENCES[:3], [0, 0, 0], 2)})
    tokenized = tokenize_sentences(data, tokenizer, 32, "train", keep_offsets=True)
    rows = with_context(tokenized, tokenizer, max_context_length=4, split="train")  # cut from the left
    config = FusionLSTMConfig(fusion="concat", fusion_context=mode, context_sentences=2, context_as_tokens=True)
    for row in rows:
        ids, context = torch.tensor(row["input_ids"]), torch.tensor(row["context_input_ids"], dtype=torch.long)
        texts = EncoderWindow.of(config).texts(row["text"], row["offsets"], row["context_text"])
        assert len(texts) == len(ids)
        for j in range(len(ids)):
            expected = tokenizer.decode(naive_context(config, ids, j, context)[1:], skip_special_tokens=True)
            assert texts[j].replace(" ", "").lower() == expected.replace(" ", ""), (mode, j, texts[j], expected)  # uncased


def test_context_controls_of_a_single_document_are_refused_naming_the_file_and_the_flag(tmp_path):
    from fusion_lstm_training.clm import main

    one = tmp_path / "one.txt"
    one.write_text("One a.\nOne b.\nOne c.\n")
    config = tiny_run_config(tmp_path / "out", tmp_path / "cache", fusion="concat", fusion_context="previous",
                             train_file=str(one), validation_file=str(one), context_sentences=1,
                             eval_context_controls=True)
    (tmp_path / "run.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"--eval_context_controls .* validation data \(.*one.txt\) holds 1 "
                                         "document: it needs at least two"):
        main([str(tmp_path / "run.json")])


@pytest.mark.parametrize("mode, bpe", [("previous", False), ("document", True), ("prefix+previous", True)])
def test_run_clm_fuses_the_documents_context(tmp_path, mode, bpe):
    lines = [s for s in (DATA / "train.txt").read_text().splitlines() if s.strip()][:36]
    documents = tmp_path / "documents.txt"
    documents.write_text("\n\n".join("\n".join(lines[i : i + 6]) for i in range(0, len(lines), 6)) + "\n")
    config = tiny_run_config(tmp_path / "out", tmp_path / "cache", fusion="concat", fusion_context=mode,
                             train_file=str(documents), validation_file=str(documents), max_eval_samples=18,
                             context_sentences=2, train_tokenizer_vocab_size=300 if bpe else None,
                             eval_context_controls=True)
    run_training(config, tmp_path)
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["fusion_context"] == mode and saved["context_sentences"] == 2 and not saved["context_as_tokens"]
    metrics = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert math.isfinite(metrics["eval_perplexity"]) and metrics["eval_perplexity"] > 1
    # the same sentences with every context emptied, and with another document's: other e_j, other perplexities
    for control in ("empty_context", "other_document"):
        assert metrics[f"eval_{control}_samples"] == metrics["eval_samples"] == 18
        assert math.isfinite(metrics[f"eval_{control}_perplexity"])
        assert metrics[f"eval_{control}_perplexity"] != metrics["eval_perplexity"]
    records = [json.loads(p.read_text()) for p in (tmp_path / "cache").rglob("view-*.json")]
    assert {r["sentences"] for r in records} == {18, 36}
    assert metrics.get("train_embedding_sentences_per_second", 0) > 0
    # the context reaches e_j: in the cache of the model's whole e_j, a validation sentence's vectors change when its
    # context is emptied, unless it opens its document (it has none to lose)
    views = {}
    for view in (tmp_path / "cache").rglob("view-*.arrow"):
        split = json.loads(view.with_suffix(".json").read_text())["split"]
        rows = Dataset.from_file(str(view)).with_format("numpy")["fusion_embeds"]
        views.setdefault(view.parent, {})[split] = rows
    whole = max(views.values(), key=lambda splits: splits["validation"][0].shape[-1])
    for i, (own, emptied) in enumerate(zip(whole["validation"], whole["validation_empty_context"])):
        assert (i % 6 == 0) == bool((own == emptied).all()), (mode, i)


def test_the_cache_keys_each_row_by_its_context_and_reuses_what_is_the_same(tokenizer, tmp_path):
    from fusion_lstm_data.embedder import PrefixEmbedder
    from fusion_lstm_training.embeddings import EmbeddingCache

    model = context_model("concat", "previous")
    cache = EmbeddingCache(PrefixEmbedder(model.prefix_encoder, tokenizer), tmp_path)
    documents = [0, 0, 0, 1, 2, 2]

    def rows(count):
        data = Dataset.from_dict({"text": SENTENCES, "document": documents,
                                  "context": previous_sentences(SENTENCES, documents, count)})
        tokenized = tokenize_sentences(data, tokenizer, 32, "train", keep_offsets=False)
        return with_context(tokenized, tokenizer, max_context_length=64, split="train")

    one = cache.attach(rows(1), "one")
    assert cache.record("one")["embedded"] == 6
    cache.attach(rows(2), "two")
    # only "One c." has another context with two sentences; the rest are the same rows
    assert (cache.record("two")["embedded"], cache.record("two")["reused"]) == (1, 5)
    assert one[3]["context_input_ids"] == []  # a document's first sentence: an empty context
    # a source that never reads the context (the prefix) keys rows by the sentence alone: the sentence-level vectors
    prefix = EmbeddingCache(PrefixEmbedder(context_model("concat", "prefix+previous").prefix_encoder, tokenizer).parts[0],
                            tmp_path)
    assert prefix.sentence_keys(rows(2)) == prefix.sentence_keys(rows(2).remove_columns("context_input_ids"))
    assert cache.sentence_keys(rows(2)) != cache.sentence_keys(rows(1))


def test_a_context_of_the_wrong_shape_or_the_old_context_length_is_refused(tokenizer):
    model = context_model("concat", "document")
    ids, context = document_row(tokenizer, ["The river rose."], "The town waited.")
    with pytest.raises(ValueError, match=r"context_input_ids must have shape \(batch, context_len\) with batch = 1"):
        model(input_ids=ids[None], context_input_ids=context)
    with pytest.raises(ValueError, match="context_attention_mask has shape"):
        model(input_ids=ids[None], context_input_ids=context[None], context_attention_mask=torch.ones(1, 1))
    with pytest.raises(ValueError, match="context_attention_mask was given without context_input_ids"):
        model(input_ids=ids[None], context_attention_mask=torch.ones(1, 1))
    with pytest.raises(ValueError, match="context_input_ids contain ids outside the vocabulary"):
        model(input_ids=ids[None], context_input_ids=torch.tensor([[10**6]]))
    with pytest.raises(ValueError, match="`context_length` is no longer an input"):
        model(input_ids=ids[None], context_length=torch.tensor([2]))
    with pytest.raises(ValueError, match="`context_length` is no longer an input"):
        model.generate(input_ids=ids[None], context_length=torch.tensor([2]), max_new_tokens=2)


def test_a_context_the_model_does_not_read_a_misspelt_keyword_and_a_state_of_another_context_are_refused(tokenizer):
    ids, context = document_row(tokenizer, ["The river rose."], "The town waited.")
    plain = tiny_model("concat")
    for call in (lambda: plain(input_ids=ids[None], context_input_ids=context[None]),
                 lambda: plain.generate(input_ids=ids[None], context_input_ids=context[None], max_new_tokens=2)):
        with pytest.raises(ValueError, match=r"trained without the document's previous sentences \(context_sentences=0"):
            call()
    model = context_model("concat", "document")
    with pytest.raises(TypeError, match=r"got unexpected keyword argument\(s\) 'context_ids'; did you mean "
                                        "context_input_ids"):
        model(input_ids=ids[None], context_ids=context[None])
    with pytest.raises(TypeError, match="'fusion_embed'; did you mean fusion_embeds"):
        model.model(input_ids=ids[None], fusion_embed=None)
    with pytest.raises(TypeError, match="context_input_ids must hold token ids .* torch.float32"):
        model(input_ids=ids[None], context_input_ids=context[None].float())
    # a state continues the sequence with the context it was made with
    state = model(input_ids=ids[None, :3], context_input_ids=context[None], use_cache=True).state
    model(input_ids=ids[None, 3:4], context_input_ids=context[None], state=state)  # the same: fine
    other = context.clone()
    other[0] = (other[0] + 1) % tokenizer.vocab_size
    for changed in ({"context_input_ids": other[None]}, {}):
        with pytest.raises(ValueError, match="This state was made with another document context"):
            model(input_ids=ids[None, 3:4], state=state, **changed)
    without = model(input_ids=ids[None, :3], use_cache=True).state
    with pytest.raises(ValueError, match="This state was made with no document context"):
        model(input_ids=ids[None, 3:4], context_input_ids=context[None], state=without)
    # generation carries the context to every step: the same tokens as a forward over the whole sequence
    generated = model.generate(input_ids=ids[None], context_input_ids=context[None], max_new_tokens=3,
                               do_sample=False)
    assert generated.shape[1] == len(ids) + 3
    # the Trainer's loss keyword passes through
    assert model(input_ids=ids[None], labels=ids[None], context_input_ids=context[None],
                 num_items_in_batch=torch.tensor(len(ids) - 1)).loss is not None


def test_prefix_and_previous_are_cached_apart_and_joined_as_the_model_computes_them(tokenizer, tmp_path):
    from fusion_lstm_data.embedder import PrefixEmbedder
    from fusion_lstm_training.embeddings import embedding_cache

    model = context_model("concat", "prefix+previous")
    documents = [0, 0, 0, 1, 2, 2]
    data = Dataset.from_dict({"text": SENTENCES, "document": documents,
                              "context": previous_sentences(SENTENCES, documents, 2)})
    sentence_level = tokenize_sentences(data, tokenizer, 32, "train", keep_offsets=False)
    rows = with_context(sentence_level, tokenizer, max_context_length=64, split="train")
    embedder = PrefixEmbedder(model.prefix_encoder, tokenizer)
    prefix, previous = embedder.parts
    # the runs that fused one part alone filled the parts' caches: the prefix from the sentence-level samples
    embedding_cache(prefix, tmp_path).attach(sentence_level, "train")
    embedding_cache(previous, tmp_path).attach(rows, "train")
    cache = embedding_cache(embedder, tmp_path)
    joined = cache.attach(rows, "train")
    parts = cache.record("train")["parts"]
    assert [p["embedded"] for p in parts] == [6, 6]  # as recorded when each part was built: nothing embedded now
    assert not any(p.stat().st_size == 0 for p in tmp_path.rglob("*.arrow"))
    assert len(list(tmp_path.rglob("part-*.arrow"))) == 2  # no part written for the joined vectors
    width = model.prefix_encoder.part_width
    for row in joined:
        ids, context = torch.tensor(row["input_ids"]), torch.tensor(row["context_input_ids"], dtype=torch.long)
        with torch.no_grad():
            expected = model.prefix_encoder(ids[None], torch.ones_like(ids)[None], len(ids), context[None])[0]
        cached = torch.tensor(row["fusion_embeds"])
        assert cached.shape == (len(ids), 2 * width)
        torch.testing.assert_close(cached, expected, atol=2e-2, rtol=2e-2)  # float16 in the cache


def test_prefix_and_previous_make_a_vector_of_twice_the_encoders_width():
    encoder = AutoConfig.from_pretrained(default_encoder_path())
    config = FusionLSTMConfig(fusion="concat", fusion_context="prefix+previous", context_sentences=3, encoder=encoder,
                              hidden_size=32)
    assert config.fusion_embedding_size == 2 * encoder.hidden_size and config.fused_size == 32 + 2 * encoder.hidden_size
    assert FusionLSTMConfig(fusion="add", fusion_context="prefix+previous", context_sentences=1, encoder=encoder,
                            hidden_size=32).needs_projection
    with pytest.raises(ValueError, match=r"fusion_embedding_size=384 but the encoder gives vectors of width 768"):
        FusionLSTMConfig(fusion="concat", fusion_context="prefix+previous", context_sentences=1, encoder=encoder,
                         fusion_embedding_size=384)


def test_the_model_card_says_what_context_a_model_reads(tmp_path):
    from hub.card import build_model_card

    model = context_model("concat", "prefix+previous")
    text = build_model_card(model, "me/doc", tmp_path, {}).text
    assert "(384-d, `cls` pooling" in text and "`prefix+previous`" in text
    assert "after the previous 2 sentence(s) of its document (pass them as `context_input_ids`" in text


def test_another_documents_context_never_comes_from_the_same_document():
    from fusion_lstm_data.documents import CONTEXT_CONTROLS

    documents = [0, 0, 0, 1, 2, 2]
    contexts = previous_sentences(SENTENCES, documents, 2)
    other = CONTEXT_CONTROLS["other_document"](contexts, documents)
    assert len(other) == len(contexts)
    for i, context in enumerate(other):
        donor = next(j for j in range(len(contexts)) if contexts[j] == context and documents[j] != documents[i])
        assert documents[donor] != documents[i]
    assert CONTEXT_CONTROLS["empty_context"](contexts, documents) == [[]] * len(contexts)
    with pytest.raises(ValueError, match="at least two documents"):
        CONTEXT_CONTROLS["other_document"](contexts[:3], documents[:3])
