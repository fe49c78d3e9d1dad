"""Data files read with checks: text (one sentence a line), json or csv with a `text` column, JSON objects, local
folders; each error names the file and the fix."""

import io
import json
from pathlib import Path

from .documents import DocumentNumbers, blank_line_documents


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


def text_lines(text: str) -> list[str]:
    """The lines of a file's text as files and the csv module count them: ended by \\n, \\r\\n or \\r only (str.splitlines
    also ends a line at U+2028, U+0085, a form feed and more, which may stand inside a word)."""
    return [line.rstrip("\r\n") for line in io.StringIO(text, newline="")]


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
        sentences = text_lines(text)
    elif kind == "csv":
        sentences = _csv_texts(path, text, column)
    else:
        sentences = _json_texts(path, text, file.suffix.lower() == ".json", column)
    if column == "text" and not any(s.strip() for s in sentences):
        raise ValueError(f"Data file {path} contains no text.")
    return sentences


def _csv_texts(path: str, text: str, column: str = "text") -> list[str]:
    import csv

    reader = csv.DictReader(io.StringIO(text, newline=""))
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
    for number, line in enumerate(text_lines(text), 1):
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
    column, a change of value starting the next document (a document's records together: DocumentNumbers)."""
    sentences = read_sentences(path)
    if TEXT_EXTENSIONS[Path(path).suffix.lower()] == "text":
        documents = blank_line_documents(sentences)
        return [s for s in sentences if s.strip()], [d for d in documents if d is not None]
    labels = read_sentences(path, column="document")
    kept = [(i, s, label) for i, (s, label) in enumerate(zip(sentences, labels), 1) if s.strip()]
    numbers = DocumentNumbers()
    return [s for _, s, _ in kept], [numbers.number(label, f"{path}: record {i}") for i, _, label in kept]


def check_local_folder(path: str | None, flag: str):
    """A path that names a local folder (it starts with . / ~ or has more than one /) must exist: otherwise the Hub
    client's "Repo id must be in the form …" would be all the user sees."""
    if path and Path(path).expanduser().is_file():
        raise ValueError(f"--{flag} {path} is a file: give the folder that holds it (with config.json), or a Hub id.")
    if path and not Path(path).expanduser().exists() and (path.startswith((".", "/", "~")) or path.count("/") > 1):
        raise FileNotFoundError(f"--{flag} {path}: folder not found (a Hub id is owner/name).")


def read_json_object(path: str | Path, what: str, fields: tuple[str, ...] = ()) -> dict:
    """The JSON object in `path` (`what` it is, for the message): a file that does not parse, is no object or lacks
    one of `fields` is refused, naming the file."""
    return parse_json_object(Path(path).read_bytes(), path, what, fields)


def parse_json_object(data: bytes, path: str | Path, what: str, fields: tuple[str, ...] = ()) -> dict:
    """read_json_object for the bytes of a file not written yet (`path`: where it would lie, for the message)."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: the {what} is not valid JSON ({error}); a cut-short file? Restore or remove it.") \
            from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: the {what} must be a JSON object {{...}}, got a {type(value).__name__}.")
    missing = [name for name in fields if name not in value]
    if missing:
        raise ValueError(f"{path}: the {what} lacks {', '.join(missing)}.")
    return value
