"""Generated text inside hand-written pages: each page holds a start and an end marker, and `write_pages` replaces what
lies between them, every page checked and every text built before any page is written."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def check_markers(document: Path, start: str, end: str) -> str:
    """The text of `document`, which must hold the markers of its generated section."""
    text = Path(document).read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise ValueError(f"{document} has no generated section: add the lines {start} and {end} where it goes.")
    return text


def replace_between(document: Path, start: str, end: str, section_text: str):
    """Replaces the lines from `start` to `end` of `document` with `section_text` (which carries the markers)."""
    text = check_markers(document, start, end)
    before, rest = text.split(start, 1)
    Path(document).write_text(before + section_text + rest.split(end, 1)[1], encoding="utf-8")


@dataclass
class GeneratedText:
    """One generated part of a page: the page, its markers, and how to build the text that goes between them (with
    the markers; None: the page keeps what it has)."""

    page: Path
    start: str
    end: str
    build: Callable[[], str | None]


def write_pages(parts: list[GeneratedText]) -> list[Path]:
    """Checks every page's markers, builds every text, then writes them: a refusal leaves every page as it was.
    Returns the pages written."""
    for part in parts:
        check_markers(part.page, part.start, part.end)
    texts = [(part, part.build()) for part in parts]
    for part, text in texts:
        if text is not None:
            replace_between(part.page, part.start, part.end, text)
    return [part.page for part, text in texts if text is not None]
