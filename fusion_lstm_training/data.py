"""Sentence-level data as in the paper: one sentence a sample, BOS … EOS, padded per batch: the splits a run trains and
evaluates on, tokenized, with the document's previous sentences where asked."""

import logging

from datasets import Dataset, DatasetDict, load_dataset

from fusion_lstm_data.batches import known_ends
from fusion_lstm_data.documents import (
    encode_context, previous_sentences, single_sentence_documents, split_into_sentences,
)
from fusion_lstm_data.files import read_documents, read_sentences


logger = logging.getLogger(__name__)


def load_splits(
    train_file: str | None = None,
    validation_file: str | None = None,
    test_file: str | None = None,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    split_sentences: bool = False,
    validation_split_percentage: int = 5,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    context_sentences: int = 0,
) -> DatasetDict:
    """train/validation/test splits from a `datasets` dataset (Hub id or local folder) when `dataset_name` is given,
    from data files otherwise; validation is carved from train when absent (`validation_split_percentage`).

    With `context_sentences` K > 0 (data files only) every sentence also carries `document` (its document's number)
    and `context` (the K sentences before it in its document, `previous_sentences`), found before any subset is
    taken: `max_*_samples` keep the first N sentences of a file, each with its whole context."""
    if dataset_name:
        if context_sentences:
            raise ValueError("context_sentences reads documents from data files (--train_file …), not from "
                             f"--dataset_name {dataset_name}.")
        splits = _dataset_splits(dataset_name, dataset_config_name, split_sentences)
    else:
        files = {"train": train_file, "validation": validation_file, "test": test_file}
        splits = {name: sentence_dataset(path, context_sentences) for name, path in files.items() if path}
    if "train" in splits and "validation" not in splits and validation_split_percentage:
        parts = splits["train"].train_test_split(test_size=validation_split_percentage / 100, seed=0)
        splits["train"], splits["validation"] = parts["train"], parts["test"]
    limits = {"train": max_train_samples, "validation": max_eval_samples, "test": max_eval_samples}
    for name, limit in limits.items():
        if name in splits and limit is not None:
            splits[name] = splits[name].select(range(min(limit, len(splits[name]))))
    return DatasetDict(splits)


def sentence_dataset(path: str, context_sentences: int = 0) -> Dataset:
    """The non-empty sentences of a data file as a Dataset: `text`, and with context_sentences > 0 `document` and
    `context`. Empty lines are dropped here, before any subset is taken, so that `max_*_samples` count sentences
    whether or not a run reads documents (a blank line separates them)."""
    if not context_sentences:
        lines = read_sentences(path)
        sentences = [line for line in lines if line.strip()]
        if len(sentences) < len(lines):
            logger.info("%s: %d empty lines dropped", path, len(lines) - len(sentences))
        return Dataset.from_dict({"text": sentences})
    try:
        sentences, documents = read_documents(path)
    except ValueError as error:
        if "`document`" not in str(error):
            raise
        raise ValueError(f"{error} --context_sentences needs each sentence's document: add a `document` column, or "
                         "use a text file with a blank line between documents.") from None
    logger.info("%s: %d sentences in %d documents, each with up to %d previous sentences of its document", path,
                len(sentences), documents[-1] + 1, context_sentences)
    if warning := single_sentence_documents(documents, context_sentences, path):
        logger.warning(warning)
    return Dataset.from_dict({"text": sentences, "document": documents,
                              "context": previous_sentences(sentences, documents, context_sentences)})


def _dataset_splits(dataset_name: str, config_name: str | None, split_sentences: bool) -> dict[str, Dataset]:
    loaded = load_dataset(dataset_name, config_name)
    splits = {}
    for name in ("train", "validation", "test"):
        if name not in loaded:
            continue
        if "text" not in loaded[name].column_names:
            raise ValueError(f"{dataset_name} ({name}) has no `text` column: {loaded[name].column_names}.")
        texts = loaded[name]["text"]
        if split_sentences:
            texts = split_into_sentences(texts)
            logger.info("%s: %d paragraphs split into %d sentences", name, len(loaded[name]), len(texts))
        splits[name] = Dataset.from_dict({"text": texts})
    return splits


def tokenize_sentences(dataset: Dataset, tokenizer, max_seq_length: int, split: str, keep_offsets: bool) -> Dataset:
    """Each non-empty sentence → BOS … EOS ids (the LM tokenizer adds BOS, EOS is appended here), truncated to
    `max_seq_length` (keeping BOS, dropping EOS). Empty lines are skipped; both are counted in the log."""

    carried = [c for c in ("document", "context") if c in dataset.column_names]  # documents' columns ride along

    def encode(batch):
        texts = [t.strip() for t in batch["text"]]
        encoded = tokenizer(texts, return_offsets_mapping=keep_offsets)
        out = {"text": [], "input_ids": [], "truncated": [], **{c: [] for c in carried}}
        if keep_offsets:
            out["offsets"] = []
        for i, (text, ids) in enumerate(zip(texts, encoded["input_ids"])):
            if not text:
                continue
            for column in carried:
                out[column].append(batch[column][i])
            ids = ids + [tokenizer.eos_token_id]
            out["text"].append(text)
            out["input_ids"].append(ids[:max_seq_length])
            out["truncated"].append(len(ids) > max_seq_length)
            if keep_offsets:
                ends = known_ends(encoded["offset_mapping"][i]) + [len(text)]
                out["offsets"].append(ends[:max_seq_length])
        return out

    tokenized = dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc=f"Tokenizing {split}")
    skipped = len(dataset) - len(tokenized)
    truncated = sum(tokenized["truncated"])
    logger.info(
        "%s: %d sentences, %d empty lines skipped, %d sentences truncated to %d tokens",
        split, len(tokenized), skipped, truncated, max_seq_length,
    )
    return tokenized.remove_columns("truncated")


def with_context(tokenized: Dataset, tokenizer, max_context_length: int, split: str) -> Dataset:
    """Every sample with its `context` sentences as `encode_context` gives them (and `context_text` for samples that
    have `offsets`): the sentence's own columns are unchanged. Whether the LSTM reads the context or only the encoder
    does is the model's config (`context_as_tokens`)."""
    with_text = "offsets" in tokenized.column_names

    def encode(batch):
        rows = [encode_context(context, tokenizer, max_context_length, with_text) for context in batch["context"]]
        return {key: [row[key] for row in rows] for key in rows[0]}

    encoded = tokenized.map(encode, batched=True, desc=f"Context tokens ({split})")
    tokens = [len(ids) for ids in encoded["context_input_ids"]]
    logger.info("%s: the previous sentences take %.1f tokens per sentence on average (at most %d), %d sentences have "
                "none", split, sum(tokens) / max(len(tokens), 1), max_context_length, sum(t == 0 for t in tokens))
    return encoded
