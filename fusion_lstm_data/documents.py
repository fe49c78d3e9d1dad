"""The document contract: where a sentence ends, where a document ends, which previous sentences belong to a
sentence, and how they become its context row. Training (data.py), generation and surprisal (fusion_lstm_surprisal)
all read documents by these rules, and by no other copy of them."""

import re


# Where a sentence ends, one rule for text (split_into_sentences) and for words in order (run_surprisal's TSVs): after
# a word that ends in . ! or ? and any closing quotes or brackets, unless the word is a title (Mr.) or an initial (J.),
# and unless the next word starts in lower case (the quotation goes on: 'What?' she asked.)
TITLES = ("Mr", "Ms", "Dr", "St", "Jr", "Sr", "vs", "Mrs", "Prof", "Gen", "Col", "Lt", "No")
CLOSING = "\"'\u201d\u2019)]"
SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*$")
SENTENCE_START = re.compile(r"[\"'\u201c\u2018(\[]*[A-Z0-9]")
WIKITEXT_HEADING = re.compile(r"^\s*=.*=\s*$")


def blank_line_documents(lines: list[str]) -> list[int | None]:
    """The document of each line of a text file (0, 1, … in file order; None for a blank line): a blank line, or
    several, separates documents; blank lines before the first sentence start none."""
    documents, document, blank_before, started = [], 0, False, False
    for line in lines:
        if not line.strip():
            blank_before = True
            documents.append(None)
            continue
        if blank_before and started:
            document += 1
        blank_before, started = False, True
        documents.append(document)
    return documents


class DocumentNumbers:
    """Numbers documents 0, 1, … in file order from each sentence's (or row's) document id, a change of id starting
    the next document. A document must be contiguous: an id that comes back after another document's, or an empty
    id, is refused, naming `where` the sentence is (`number` below)."""

    def __init__(self):
        self.first_seen: dict = {}  # id → where its document started
        self.current = None

    def number(self, document_id, where: str) -> int:
        if document_id is None or not str(document_id).strip():
            raise ValueError(f"{where}: an empty document id; give every sentence its document.")
        if document_id != self.current:
            if document_id in self.first_seen:
                raise ValueError(f"{where}: document {document_id!r} comes back after other documents (it started at "
                                 f"{self.first_seen[document_id]}): a document's sentences must be together. Sort the "
                                 "file by document, keeping each document's sentence order (and, for data of several "
                                 "readers, name the reader's column as part of the document).")
            self.first_seen[document_id], self.current = where, document_id
        return len(self.first_seen) - 1


def single_sentence_documents(documents: list, context_sentences, where: str) -> str | None:
    """The warning for a context asked of documents that all have one sentence (none would get any), else None."""
    if context_sentences and documents and len(set(documents)) == len(documents):
        return (f"{where}: a context of {context_sentences} previous sentences is asked, but each of its "
                f"{len(documents)} documents has a single sentence: no sentence gets any context. Is the document "
                "column the right one?")
    return None


def previous_sentences(sentences: list[str], documents: list[int], count: int) -> list[list[str]]:
    """For each sentence, the (at most) `count` sentences before it in its own document, in order (none for the
    first sentence of a document): nothing crosses a document boundary."""
    contexts = []
    for i, document in enumerate(documents):
        start = i
        while start > max(0, i - count) and documents[start - 1] == document:
            start -= 1
        contexts.append(sentences[start:i])
    return contexts


def ends_sentence(word: str, next_word: str | None = None) -> bool:
    """Whether a sentence ends after `word` (see SENTENCE_END; `next_word`: the word after it, None at the end)."""
    if not SENTENCE_END.search(word):
        return False
    stem = word.rstrip(CLOSING)[:-1]
    if stem in TITLES or re.fullmatch(r"[A-Z]", stem):
        return False
    return next_word is None or bool(SENTENCE_START.match(next_word))


def split_into_sentences(paragraphs: list[str]) -> list[str]:
    """Paragraphs (e.g. WikiText-103 lines) → sentences (words joined by single spaces), cut where ends_sentence
    says; headings (`= Title =`) and empty lines are dropped."""
    sentences = []
    for paragraph in paragraphs:
        if not paragraph.strip() or WIKITEXT_HEADING.match(paragraph):
            continue
        words, start = paragraph.split(), 0
        for k, word in enumerate(words):
            if ends_sentence(word, words[k + 1] if k + 1 < len(words) else None):
                sentences.append(" ".join(words[start: k + 1]))
                start = k + 1
        if start < len(words):
            sentences.append(" ".join(words[start:]))
    return sentences


def encode_context(context: list[str], tokenizer, max_context_length: int, with_text: bool = False) -> dict:
    """A sentence's document context as the model reads it: `context_input_ids`, each previous sentence's tokens
    followed by EOS (no BOS), at most `max_context_length`, the most recent; with `with_text`, `context_text` too: the
    previous sentences joined by single spaces, from where the first kept token starts (a sentence cut short keeps
    the end of its text, as it keeps the end of its tokens)."""
    pieces = [s.strip() for s in context]
    encoded = tokenizer(pieces, add_special_tokens=False, return_offsets_mapping=True) if pieces else None
    tokens, starts, start = [], [], 0
    for k, piece in enumerate(pieces):
        tokens += [*encoded["input_ids"][k], tokenizer.eos_token_id]
        starts += [start + a for a, _ in encoded["offset_mapping"][k]] + [start + len(piece)]
        start += len(piece) + 1
    keep = min(len(tokens), max_context_length)
    row = {"context_input_ids": tokens[len(tokens) - keep :]}
    if with_text:
        row["context_text"] = " ".join(pieces)[starts[len(starts) - keep] :] if keep else ""
    return row


def other_document_contexts(contexts: list[list[str]], documents: list[int]) -> list[list[str]]:
    """For each sentence, the context of a sentence of another document: the sentence half the list away, or the first
    after it (cyclically) whose document differs; a list of one document has no other, and is refused."""
    n = len(contexts)
    if len(set(documents)) < 2:
        raise ValueError("Another document's context needs at least two documents.")
    donors = []
    for i in range(n):
        j = (i + n // 2) % n
        while documents[j] == documents[i]:
            j = (j + 1) % n
        donors.append(contexts[j])
    return donors


# The evaluations that tell a context's content from its presence: each maps the split's contexts (and documents) to
# the contexts the model reads instead; run_clm.py's --eval_context_controls evaluates the validation split with each.
CONTEXT_CONTROLS = {
    "empty_context": lambda contexts, documents: [[] for _ in contexts],  # what it saw at every document's start
    "other_document": other_document_contexts,  # a context of the same kind, about something else
}
