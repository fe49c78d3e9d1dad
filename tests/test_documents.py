"""Beyond the sentence: documents in the data (blank lines, a `document` column), each sentence with the previous
sentences of its own document, read by the LSTM as tokens that are conditioned on and never scored."""

import json
import math

import pytest
import torch
from datasets import Dataset

from fusion_lstm_training.data import (
    FusionDataCollator, context_as_tokens, load_splits, previous_sentences, read_documents, tokenize_sentences,
)
from modeling_fusion_lstm import FusionLSTMConfig, FusionLSTMForCausalLM
from helpers import DATA, TINY, TINY_OVERRIDES, run_training, tiny_run_config

DOCUMENTS = "\nOne a.\nOne b.\nOne c.\n\n\nTwo a.\n  \nThree a.\nThree b.\n"
SENTENCES = ["One a.", "One b.", "One c.", "Two a.", "Three a.", "Three b."]


def test_blank_lines_separate_documents(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text(DOCUMENTS)
    assert read_documents(str(path)) == (SENTENCES, [0, 0, 0, 1, 2, 2])


def test_a_document_column_names_the_documents_of_csv_and_jsonl(tmp_path):
    csv = tmp_path / "docs.csv"
    csv.write_text("document,text\nA,One a.\nA,One b.\nB,Two a.\nA,Three a.\n")
    assert read_documents(str(csv)) == (["One a.", "One b.", "Two a.", "Three a."], [0, 0, 1, 2])
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t, "document": d}) for t, d in (("x.", 7), ("y.", 7), ("z.", 8))))
    assert read_documents(str(jsonl)) == (["x.", "y.", "z."], [0, 0, 1])
    without = tmp_path / "plain.jsonl"
    without.write_text(json.dumps({"text": "x."}) + "\n")
    with pytest.raises(ValueError, match=r"plain.jsonl, line 1: the record has no `document` field.*add a `document`"):
        load_splits(train_file=str(without), validation_split_percentage=0, context_sentences=1)


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


def test_context_read_as_tokens_is_conditioned_on_but_never_scored(tokenizer):
    data = Dataset.from_dict({"text": SENTENCES[:3], "document": [0, 0, 0],
                              "context": previous_sentences(SENTENCES[:3], [0, 0, 0], 2)})
    sentence_level = tokenize_sentences(data, tokenizer, 32, "train", keep_offsets=False)
    with_context = context_as_tokens(sentence_level, tokenizer, max_context_length=64, split="train")
    eos, bos = tokenizer.eos_token_id, tokenizer.bos_token_id
    one_a = tokenizer("One a.", add_special_tokens=False)["input_ids"]
    one_b = tokenizer("One b.", add_special_tokens=False)["input_ids"]
    third = sentence_level[2]["input_ids"]
    assert with_context[2]["input_ids"] == [bos, *one_a, eos, *one_b, eos, *third[1:]]
    scored = [label for label in with_context[2]["labels"] if label != -100]
    assert scored == third[1:]  # the same tokens as the sentence alone
    assert with_context[0]["input_ids"] == sentence_level[0]["input_ids"]  # a document's first sentence: no context
    # the most recent context tokens are kept
    cut = context_as_tokens(sentence_level, tokenizer, max_context_length=len(one_b) + 1, split="train")
    assert cut[2]["input_ids"] == [bos, *one_b, eos, *third[1:]]

    batch = FusionDataCollator(pad_token_id=tokenizer.pad_token_id)([with_context[i] for i in range(3)])
    assert batch["labels"].shape == batch["input_ids"].shape
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    model = FusionLSTMForCausalLM(FusionLSTMConfig(vocab_size=len(tokenizer), fusion="none", context_sentences=2,
                                                   context_as_tokens=True, **TINY)).eval()
    with torch.no_grad():
        out = model(**batch)
        logits = out.logits[:, :-1]
        targets = batch["labels"][:, 1:]
        by_hand = torch.nn.functional.cross_entropy(logits[targets != -100], targets[targets != -100])
    torch.testing.assert_close(out.loss, by_hand)
    assert int((targets != -100).sum()) == sum(len(sentence_level[i]["input_ids"]) - 1 for i in range(3))


def test_the_config_records_the_context_and_refuses_what_nothing_reads():
    config = FusionLSTMConfig(fusion="none", context_sentences=3, context_as_tokens=True)
    assert FusionLSTMConfig.from_dict(config.to_dict()).context_sentences == 3
    with pytest.raises(ValueError, match="context_sentences: nothing reads the context"):
        FusionLSTMConfig(fusion="none", context_sentences=2)
    with pytest.raises(ValueError, match="context_as_tokens needs context_sentences"):
        FusionLSTMConfig(fusion="none", context_as_tokens=True)
    with pytest.raises(ValueError, match="not built yet"):
        FusionLSTMConfig(fusion="concat", context_sentences=1, context_as_tokens=True)
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
