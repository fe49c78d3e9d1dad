"""The input of surprisal: sentences of words (a text file, or a TSV of one word a line with its reading times), and
the word that each token of a sentence belongs to."""

import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from fusion_lstm_data.documents import DocumentNumbers, blank_line_documents, ends_sentence
from fusion_lstm_data.files import read_text_file, text_lines


logger = logging.getLogger(__name__)


@dataclass
class Sentence:
    """One sentence of the input: its id, its words, where it came from (for error messages) and its document."""

    id: str
    words: list[str]
    source: str
    document: str | None = None
    fields: list[dict] | None = None  # a TSV's row of each word, every column as read (written back beside surprisal)

    @property
    def text(self) -> str:
        return " ".join(self.words)

    def spans(self) -> list[tuple[int, int]]:
        """Each word's [start, end) in `text`."""
        spans, start = [], 0
        for word in self.words:
            spans.append((start, start + len(word)))
            start += len(word) + 1
        return spans


@dataclass
class WordSurprisal:
    sentence: str
    word_index: int
    word: str
    surprisal: float  # bits
    tokens: int
    bow_correction: float | None = None  # bits added by the leading-space correction (in surprisal), when it is on
    entropy: float | None = None  # bits: of the word's first token given that a word begins there, when asked
    entropy_sampled: float | None = None  # bits: the next-word entropy estimated from sampled words, when asked


def read_sentences_of_words(path: str, word_column: str = "word", sentence_column: str | None = None,
                            document_column: str | None = None) -> list[Sentence]:
    """Sentences of a text file (one sentence a line, words split on whitespace; a blank line between documents) or
    of a TSV with a word column (words in order; sentences by `sentence_column`, else where documents.ends_sentence says:
    after a word ending in . ! or ? and any closing quotes, not a title such as "Mr." or an initial, unless the next
    word starts in lower case; documents by `document_column`, a change of value ending the sentence too; several
    columns, comma-separated, name a document together: item,WorkerId for one reader's copy of each story)."""
    file = Path(path)
    text = read_text_file(path, "Input file")
    if not text.strip():
        raise ValueError(f"Input file {path} is empty.")
    if file.suffix.lower() not in (".tsv", ".tab"):
        if document_column:
            raise ValueError(f"{path} is a text file: its documents are separated by blank lines, not named by a "
                             f"column ({document_column!r}); drop --document_column.")
        if sentence_column or word_column != "word":
            raise ValueError(f"{path} is a text file (one sentence a line, words split on spaces), without columns: "
                             "drop --sentence_column and --word_column, or give a .tsv.")
        lines, sentences = text_lines(text), []
        for number, (line, document) in enumerate(zip(lines, blank_line_documents(lines)), 1):
            if document is not None:  # a blank line separates documents
                sentences.append(Sentence(str(len(sentences) + 1), line.split(), f"{path}:{number}", str(document)))
        return sentences
    rows = list(csv.DictReader(text_lines(text), delimiter="\t", quoting=csv.QUOTE_NONE))
    columns = list(rows[0]) if rows else text_lines(text)[0].split("\t")
    document_columns = document_column.split(",") if document_column else []
    for column, flag in ((word_column, "--word_column"), (sentence_column, "--sentence_column"),
                         *((c, "--document_column") for c in document_columns)):
        if column and column not in columns:
            raise ValueError(f"{path} has no column {column!r} (columns: {', '.join(columns)}); choose it with {flag}.")
    if not rows:
        raise ValueError(f"Input file {path} has a header but no rows.")
    documents = [document_of_row(row, document_columns) if document_columns else None for row in rows]
    sentences, words, fields, first_line, sentence_id, document = [], [], [], 2, None, None
    # the next row's word, where it is in the same document: whether a sentence ends is documents.ends_sentence's rule
    following = [rows[k + 1][word_column] if k + 1 < len(rows) and documents[k + 1] == documents[k] else None
                 for k in range(len(rows))]

    def close():
        sentences.append(Sentence(sentence_id if sentence_column else str(len(sentences) + 1), words,
                                  f"{path}:{first_line}", document, fields))

    # sentences already closed, as (document, sentence id): one may not come back (two would share its label); ids may
    # restart in each document
    seen = set()
    numbers = DocumentNumbers()  # a document's rows are together
    for number, (row, row_document) in enumerate(zip(rows, documents), 2):  # line 1 is the header
        if None in row:
            raise ValueError(f"{path}:{number}: the row has more fields than the header (a tab inside a field?).")
        word = (row[word_column] or "").strip()
        if not word or len(word.split()) != 1:
            raise ValueError(f"{path}:{number}: the {word_column!r} column must hold one word, got {word!r}.")
        if document_column:
            numbers.number(row_document, f"{path}:{number} ({document_column!r})")
        new_sentence = sentence_column and row[sentence_column] != sentence_id
        new_document = document_column and row_document != document
        if words and (new_sentence or new_document):
            close()
            seen.add((document, sentence_id))
            words, fields, first_line = [], [], number
        if sentence_column and (row_document, row[sentence_column]) in seen:
            within = f" of document {row_document!r}" if document_column else ""
            raise ValueError(f"{path}:{number}: sentence {row[sentence_column]!r}{within} comes back after other "
                             f"sentences; the rows of a sentence must be together (sort the file by "
                             f"{sentence_column!r}).")
        sentence_id = row[sentence_column] if sentence_column else None
        document = row_document
        words.append(word)
        fields.append(row)
        if not sentence_column and ends_sentence(word, (following[number - 2] or "").strip() or None):
            close()
            words, fields, first_line = [], [], number + 1
    if words:
        close()
    logger.info("%s: %d sentences in %d documents", path, len(sentences),
                len({s.document for s in sentences}) if document_column else 1)
    return sentences


def document_of_row(row: dict, columns: list[str]) -> str:
    """A TSV row's document: its document columns' values joined by "/" ("" where all are empty)."""
    values = [row[c] or "" for c in columns]
    return "/".join(values) if any(v.strip() for v in values) else ""


def align(sentence: Sentence, offsets: list[tuple[int, int]]) -> list[int]:
    """The word of each token, from the tokens' character offsets in sentence.text. The space before a word belongs
    to that word (byte-level BPEs put it on the word's first token); a token across two words is an error."""
    last_word = len(sentence.words) - 1
    owner_of_char = []  # the word of each character of the text; a space goes with the word after it
    for index, word in enumerate(sentence.words):
        owner_of_char += [index] * len(word) + [min(index + 1, last_word)]
    owners = []
    for start, end in offsets:
        first = owner_of_char[min(start, len(owner_of_char) - 1)]
        last = owner_of_char[min(max(end - 1, start), len(owner_of_char) - 1)]
        if first != last:
            raise ValueError(f"{sentence.source}: a token (characters {start}-{end}, {sentence.text[start:end]!r}) "
                             f"spans two words of {sentence.text!r}.")
        owners.append(first)
    missing = sorted(set(range(len(sentence.words))) - set(owners))
    if missing:
        raise ValueError(f"{sentence.source}: the tokenizer produced no token for the word(s) "
                         f"{[sentence.words[i] for i in missing]} of {sentence.text!r}.")
    return owners


# a CoNLL-X token aligned to Natural Stories' words: TokenId=<story>.<zone>[.<part of the word>]
TOKEN_ID = re.compile(r"TokenId=(\d+)\.(\d+)")


def conllx_sentence_ids(path: str) -> dict[tuple[str, str], str]:
    """The sentence of each word in a parse aligned to a corpus' words (the Natural Stories authors'
    parses/ud/stories-aligned.conllx: a blank line between sentences, each token's TokenId=<story>.<zone>), as
    {(story, zone): sentence id}; a word split into several tokens belongs to the sentence of its first."""
    sentences, number, new = {}, 0, True
    for line in read_text_file(path, "Parse file").splitlines():
        if not line.strip():
            new = True
            continue
        match = TOKEN_ID.search(line)
        if not match:
            continue
        number += new
        new = False
        sentences.setdefault((match.group(1), match.group(2)), str(number))
    if not sentences:
        raise ValueError(f"{path} has no token with TokenId=<story>.<zone>: not a parse aligned to the corpus' words.")
    return sentences


def with_sentence_column(tsv: str, sentence_ids: dict[tuple[str, str], str], out: str,
                         document_column: str = "item", position_column: str = "zone", column: str = "sentence_id"):
    """`tsv` with a column `column` holding each row's sentence from `sentence_ids` ({(document, position): id}),
    written to `out`, for --sentence_column; a row the ids do not name is refused, naming its line."""
    rows = list(csv.DictReader(text_lines(read_text_file(tsv, "Input file")), delimiter="\t", quoting=csv.QUOTE_NONE))
    with open(out, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_NONE, quotechar=None, lineterminator="\n")
        writer.writerow([*rows[0], column])
        for number, row in enumerate(rows, 2):
            key = (row[document_column].strip(), row[position_column].strip())
            if key not in sentence_ids:
                raise ValueError(f"{tsv}:{number}: {document_column} {key[0]!r}, {position_column} {key[1]!r} is in "
                                 "no sentence of the parse.")
            writer.writerow([*row.values(), sentence_ids[key]])
