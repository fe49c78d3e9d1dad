"""Sentence-level data as in the paper: one sentence a sample, BOS … EOS, padded per batch."""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset, DatasetDict, load_dataset

from .documents import blank_line_documents, encode_context, previous_sentences, split_into_sentences


logger = logging.getLogger(__name__)
TEXT_EXTENSIONS = {".txt": "text", ".text": "text", ".json": "json", ".jsonl": "json", ".csv": "csv"}


def read_text_file(path: str | Path, what: str) -> str:
    """The UTF-8 text of `path` (without a byte-order mark); a missing file or one that is not UTF-8 is refused, naming
    the file and the line."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist.")
    raw = file.read_bytes()
    try:
        # a byte-order mark (as Excel writes UTF-8) is not part of the text: it would stick to the first column's name
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text ({error.reason} at byte {error.start}); convert the file to "
                         "UTF-8.") from None


def read_sentences(path: str, column: str = "text") -> list[str]:
    """Sentences of a data file (text: one per line; json/jsonl/csv: a `text` column), checked on the way:
    a missing or empty file, a file that is not UTF-8 (with the line), or json/csv without `text` raise.
    `column`: another column of a json/csv file, read the same way (e.g. `document`)."""
    file = Path(path)
    text = read_text_file(path, "Data file")
    kind = TEXT_EXTENSIONS.get(file.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: unsupported extension {file.suffix!r}; use one of {', '.join(TEXT_EXTENSIONS)}.")
    if kind == "text":
        sentences = text.splitlines()
    elif kind == "csv":
        sentences = _csv_texts(path, text, column)
    else:
        sentences = _json_texts(path, text, file.suffix.lower() == ".json", column)
    if column == "text" and not any(s.strip() for s in sentences):
        raise ValueError(f"Data file {path} contains no text.")
    return sentences


def _csv_texts(path: str, text: str, column: str = "text") -> list[str]:
    import csv
    import io

    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or column not in reader.fieldnames:
        raise ValueError(f"{path} has no `{column}` column (columns: {', '.join(reader.fieldnames or [])}).")
    sentences = []
    for row in reader:
        if None in row or any(value is None for value in row.values()):  # more fields, or fewer, than the header
            fields = len(row) - (None in row) - sum(v is None for v in row.values()) + len(row.get(None) or [])
            raise ValueError(f"{path}:{reader.line_num}: the row has {fields} fields where the header has "
                             f"{len(reader.fieldnames)}.")
        sentences.append(row[column])
    return sentences


def _json_texts(path: str, text: str, whole_file: bool, column: str = "text") -> list[str]:
    """JSON Lines (one record a line), or a .json file holding a list of records or {"text": [...]}."""
    if whole_file and text.lstrip().startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            if not text.lstrip().startswith("{"):
                raise ValueError(f"{path} is not valid JSON: {error}.") from None
            data = None  # JSON Lines in a .json file
        if isinstance(data, dict) and isinstance(data.get("text"), list):  # {"text": [...]}
            if not isinstance(data.get(column), list):
                raise ValueError(f"{path} has no `{column}` list beside its `text` list.")
            uneven = {k: len(v) for k, v in data.items() if isinstance(v, list) and len(v) != len(data["text"])}
            if uneven:  # zipped, the longer lists would lose their tail without a word
                raise ValueError(f"{path}: the `text` list has {len(data['text'])} items but "
                                 f"{', '.join(f'`{k}` has {n}' for k, n in uneven.items())}: the lists of a columnar "
                                 "file must be of one length.")
            return [_record_text(path, f"{column}[{i}]", {column: t}, column) for i, t in enumerate(data[column])]
        if isinstance(data, dict):  # one record
            return [_record_text(path, "the record", data, column)]
        if isinstance(data, list):
            return [_record_text(path, f"record {i}", r, column) for i, r in enumerate(data)]
    sentences = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not a JSON record ({error}).") from None
            sentences.append(_record_text(path, f"line {number}", record, column))
    return sentences


def _record_text(path: str, where: str, record, column: str = "text") -> str:
    if not isinstance(record, dict) or column not in record:
        raise ValueError(f"{path}, {where}: the record has no `{column}` field.")
    value = record[column]
    if column != "text" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # a document may be named by a number
    if not isinstance(value, str):
        raise ValueError(f"{path}, {where}: `{column}` must be a string, got {value!r}.")
    return value


def read_documents(path: str) -> tuple[list[str], list[int]]:
    """The non-empty sentences of a data file and the document of each (0, 1, …, in file order). A text file
    separates documents by blank lines; a json/jsonl/csv file names each sentence's document in a `document`
    column, a change of value starting the next document."""
    sentences = read_sentences(path)
    if TEXT_EXTENSIONS[Path(path).suffix.lower()] == "text":
        documents = blank_line_documents(sentences)
        return [s for s in sentences if s.strip()], [d for d in documents if d is not None]
    labels = read_sentences(path, column="document")
    kept = [(s, label) for s, label in zip(sentences, labels) if s.strip()]
    documents = []
    for i, (_, label) in enumerate(kept):
        starts = i == 0 or label != kept[i - 1][1]
        documents.append((documents[-1] if documents else -1) + starts)
    return [s for s, _ in kept], documents


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


def known_ends(offsets) -> list[int]:
    """For each token's (start, end) characters, where the text that tokens up to it determine ends: its end, or,
    where the next token starts before that end (a byte-level BPE splits a rare character into several byte tokens,
    each given the whole character), where the next token starts: a window cut there never holds a character whose
    last byte comes later (the text path's prefixes, PrefixContext.texts)."""
    offsets = [tuple(o) for o in offsets]
    return [min(end, offsets[k + 1][0]) if k + 1 < len(offsets) else end for k, (_, end) in enumerate(offsets)]


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


def pad_right(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists → (ids, attention_mask), both (len(sequences), longest), padded on the right."""
    lengths = [len(seq) for seq in sequences]
    ids = torch.full((len(sequences), max(lengths, default=0)), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, seq in enumerate(sequences):
        ids[i, : lengths[i]] = torch.as_tensor(seq)
        mask[i, : lengths[i]] = 1
    return ids, mask


@dataclass
class FusionDataCollator:
    """Pads a batch on the right: input_ids with the pad id, attention_mask with 0, labels with -100, and
    fusion_embeds (float16 in the cache) with zeros, as float32. Labels are the input ids, or the features' own
    `labels` where they have them. The document's previous sentences, `context_input_ids`, are padded the same way
    into context_input_ids and context_attention_mask."""

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = pad_right([f["input_ids"] for f in features], self.pad_token_id)
        batch, length = input_ids.shape
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        if "labels" in features[0]:
            labels, _ = pad_right([f["labels"] for f in features], -100)
        out = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if "context_input_ids" in features[0]:
            out["context_input_ids"], out["context_attention_mask"] = pad_right(
                [f["context_input_ids"] for f in features], self.pad_token_id)
        if "fusion_embeds" in features[0]:
            width = len(features[0]["fusion_embeds"][0])
            fusion_embeds = torch.zeros(batch, length, width)
            for i, f in enumerate(features):
                vectors = torch.as_tensor(f["fusion_embeds"], dtype=torch.float32)
                fusion_embeds[i, : len(vectors)] = vectors
            out["fusion_embeds"] = fusion_embeds
        return out


def check_local_folder(path: str | None, flag: str):
    """A path that names a local folder (it starts with . / ~ or has more than one /) must exist: otherwise the Hub
    client's "Repo id must be in the form …" would be all the user sees."""
    if path and not Path(path).expanduser().exists() and (path.startswith((".", "/", "~")) or path.count("/") > 1):
        raise FileNotFoundError(f"--{flag} {path}: folder not found (a Hub id is owner/name).")


def read_json_object(path: str | Path, what: str, fields: tuple[str, ...] = ()) -> dict:
    """The JSON object in `path` (`what` it is, for the message): a file that does not parse, is no object or lacks
    one of `fields` is refused, naming the file."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: the {what} is not valid JSON ({error}); a cut-short file? Restore or remove it.") \
            from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: the {what} must be a JSON object {{...}}, got a {type(value).__name__}.")
    missing = [name for name in fields if name not in value]
    if missing:
        raise ValueError(f"{path}: the {what} lacks {', '.join(missing)}.")
    return value

