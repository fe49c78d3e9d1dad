"""The leading-space correction of word surprisal (Pimentel & Meister 2024, "How to compute the probability of a
word"; Oh & Schuler 2024).

With a tokenizer whose words begin with a space marker (byte-level BPE: "Ġ", SentencePiece: "▁"), the tokens of a
word w_t do not say that the word has ended: "cat" could go on as "cats". The probability of the word also needs the
probability that what follows begins a new word. Let B(after x) be the total probability, after the last token of
x, of the tokens that begin a word (their text starts with the space marker) and of EOS. Then

    surprisal(w_t) = -log2 p(tokens of w_t | context) - log2 B(after w_t) + log2 B(after w_{t-1})

where B(after w_{t-1}) is taken before the first word too (after BOS or the context) when that word's first token
carries the marker; a first token without it (a sentence read on its own starts without a space) begins a word
whatever it is, so that B is 1.

WordPiece (BERT's vocabulary, the default fusion models') marks the opposite: a token that continues a word starts
with "##", and punctuation is split off as tokens without "##", so whether the next token begins a new
whitespace-separated word is not known from the token alone; the correction does not apply there, and the plain
surprisal is p(the word's tokens | context).
"""

import torch


SPACE_MARKERS = ("Ġ", "▁")  # byte-level BPE, SentencePiece


def space_marker(tokenizer) -> str | None:
    """The character that a word-initial token's text starts with (None: the tokenizer marks no spaces): the first
    token of the second word of "a b" starts with it, whether the vocabulary has merged "Ġb" or keeps "Ġ" apart (a
    small byte-level BPE)."""
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("a b", add_special_tokens=False)["input_ids"])
    return next((marker for marker in SPACE_MARKERS if len(tokens) >= 2 and tokens[1].startswith(marker)), None)


def word_start_ids(tokenizer) -> torch.Tensor:
    """Ids of the tokens that begin a word (their text starts with the space marker) and of EOS. Refuses a
    tokenizer without a space marker, saying why."""
    marker = space_marker(tokenizer)
    if marker is None:
        sample = tokenizer.convert_ids_to_tokens(tokenizer("a cats", add_special_tokens=False)["input_ids"])
        raise ValueError(
            f"--bow_correction needs a tokenizer whose words begin with a space marker (byte-level BPE 'Ġ', "
            f"SentencePiece '▁'); {type(tokenizer).__name__} tokenizes 'a cats' as {sample}. With WordPiece a "
            "continuation is marked ('##') and punctuation is split off, so the end of a word is not known from the "
            "next token: the correction does not apply, and the plain surprisal is p(the word's tokens | context). "
            "Drop --bow_correction."
        )
    special = set(tokenizer.all_special_ids)
    ids = {i for token, i in tokenizer.get_vocab().items() if token.startswith(marker) and i not in special}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return torch.tensor(sorted(ids))


def word_begin_ids(tokenizer) -> torch.Tensor:
    """Ids of the tokens that a next word begins with, which the next-word entropy conditions on: those with the space
    marker (byte-level BPE, SentencePiece), or for a vocabulary without one (WordPiece) every token that does not
    continue a word ("##"), punctuation included; never a special token or EOS (the sentence going on is given)."""
    marker = space_marker(tokenizer)
    special = set(tokenizer.all_special_ids)
    begins = (lambda token: token.startswith(marker)) if marker else (lambda token: not token.startswith("##"))
    return torch.tensor(sorted(i for token, i in tokenizer.get_vocab().items() if begins(token) and i not in special))
