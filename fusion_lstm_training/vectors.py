"""Where e_j comes from: the VectorSource interface, the registry of sources (SOURCES), and yours.

Every source is a `VectorSource`; the embedding cache (embeddings.py) stores each source's vectors per sentence under
its fingerprint, and run_clm.py feeds them to the model as `fusion_embeds`. A source is made by a factory, a built-in
one (a row of SOURCES: the factory, the report's label, the help's description) or yours, `module:attr`; every
factory is called by keyword with `tokenizer` and `train_texts`, and with the fields of SourceOptions it names (the
encoder's folder, the model's own encoder source, …). Adding a source is one factory and one row.
"""

import hashlib
import importlib
import inspect
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
from datasets import Dataset

from fusion_lstm_data.embedder import encoder_fingerprint
from modeling_fusion_lstm.prefix_encoder_fusion_lstm import EncoderWindow


@runtime_checkable
class VectorSource(Protocol):
    """What the embedding cache needs from anything that gives e_j.

    width: the width of every vector. fingerprint(): a string that changes whenever the vectors would (it names
    the source's folder in the cache). __call__(batch): `batch` holds a few tokenized sentences, `input_ids` (lists
    of ids, BOS first), `text` and `offsets` (the character where each token ends; BOS ends at 0); returns
    {"fusion_embeds": [array (len(ids), width) per sentence]}, row j being e_j of token j.
    """

    width: int

    def fingerprint(self) -> str: ...

    def __call__(self, batch: dict) -> dict: ...


def check_vector_source(source, name: str):
    """Refuses an object that is not a VectorSource, naming what it lacks."""
    if not isinstance(source, VectorSource):
        missing = [a for a in ("width", "fingerprint", "__call__") if not hasattr(source, a)]
        raise TypeError(f"{name} is a {type(source).__name__}, which lacks {missing}: a vector source needs width, "
                        "fingerprint() and __call__(batch) (see VectorSource in fusion_lstm_training/vectors.py).")
    if not isinstance(source.width, int) or source.width < 1:
        raise ValueError(f"{name} is a {type(source).__name__} of width {source.width!r}: the width must be a "
                         "positive integer.")


FLOAT16_MAX = 65504.0  # the cache stores float16


def checked_vectors(source: VectorSource, batch: dict, output) -> list[np.ndarray]:
    """The vectors a source returned for `batch`, checked before anything is written: a `fusion_embeds` list with
    one (len(ids), width) array per sentence, finite and within float16's range. The error names the source."""
    name = f"The vector source {type(source).__name__}"
    if not isinstance(output, dict) or "fusion_embeds" not in output:
        raise ValueError(f"{name} returned {type(output).__name__} without a 'fusion_embeds' key: return "
                         "{'fusion_embeds': [array (len(ids), width) per sentence]}.")
    vectors = output["fusion_embeds"]
    if len(vectors) != len(batch["input_ids"]):
        raise ValueError(f"{name} returned {len(vectors)} arrays for {len(batch['input_ids'])} sentences.")
    checked = []
    for ids, array in zip(batch["input_ids"], vectors):
        array = np.asarray(array, dtype=np.float32)
        if array.shape != (len(ids), source.width):
            raise ValueError(f"{name} returned vectors of shape {array.shape} for a sentence of {len(ids)} tokens: "
                             f"expected ({len(ids)}, {source.width}), one row per token (BOS included).")
        if not np.isfinite(array).all():
            raise ValueError(f"{name} returned NaN or infinite values: a model trained on them learns nothing.")
        if np.abs(array).max(initial=0.0) > FLOAT16_MAX:
            raise ValueError(f"{name} returned values up to {np.abs(array).max():.3g}, beyond float16's "
                             f"{FLOAT16_MAX:.0f}, which the cache stores: scale them down.")
        checked.append(array.astype(np.float16))
    return checked


logger = logging.getLogger(__name__)
FACTORY_KEYWORDS = ("tokenizer", "train_texts")  # what every factory, a user's too, is called with, by keyword


def check_source(name: str):
    """A built-in source, or a `module:attr` that imports and takes FACTORY_KEYWORDS (before any work is done)."""
    if name not in SOURCES and ":" not in name:
        raise ValueError(f"--fusion_vectors={name!r}: use one of {', '.join(SOURCES)} or your own source as "
                         "module:attr (see fusion_lstm_training/vectors.py).")
    if ":" in name:
        check_factory(name, source_factory(name))


def factory_options(factory) -> list[str]:
    """The SourceOptions fields a factory names: it is given those, by keyword, beside FACTORY_KEYWORDS."""
    try:
        return [name for name in inspect.signature(factory).parameters if name in OPTION_NAMES]
    except ValueError:  # a callable without a readable signature (a builtin)
        return []


def check_factory(name: str, factory):
    """Every factory, built-in or a user's, must be callable as factory(tokenizer=…, train_texts=…, plus the
    SourceOptions fields it names): checked on its signature."""
    if not callable(factory):
        raise TypeError(f"--fusion_vectors={name!r} names a {type(factory).__name__}, not a factory: it must be "
                        "callable as attr(tokenizer=…, train_texts=…) and return a vector source.")
    try:
        inspect.signature(factory).bind(**dict.fromkeys((*FACTORY_KEYWORDS, *factory_options(factory))))
    except TypeError as error:
        raise TypeError(f"--fusion_vectors={name!r}: the factory is called by keyword as attr(tokenizer=…, "
                        f"train_texts=…), and with the SourceOptions fields it names ({', '.join(sorted(OPTION_NAMES))}"
                        f"), which its signature {inspect.signature(factory)} does not take ({error}); name its "
                        "parameters tokenizer, train_texts and any of those.") from None
    except ValueError:  # a callable without a readable signature (a builtin): checked when it is called
        pass


def source_factory(name: str):
    module_name, _, attr = name.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"--fusion_vectors={name!r}: cannot import {attr} from {module_name} ({error}). Put the "
                         "module on PYTHONPATH.") from None


class ZeroVectors:
    """All-zero e_j: a model that can learn nothing from its vectors (the control of the vector sources)."""

    def __init__(self, width: int):
        self.width = width

    def fingerprint(self) -> str:
        return f"zeros-{self.width}"

    def __call__(self, batch: dict) -> dict:
        return {"fusion_embeds": [np.zeros((len(ids), self.width), dtype=np.float16) for ids in batch["input_ids"]]}


class ConstantVectors:
    """One vector at every position of every sentence: `vector` (e.g. the encoder's of an empty window, so that it
    has the encoder's scale). The control for a fixed e_j."""

    def __init__(self, vector: np.ndarray, name: str = "constant"):
        self.vector = np.asarray(vector, dtype=np.float16).reshape(-1)
        self.width = len(self.vector)
        self.name = name

    @classmethod
    def empty_window(cls, prefix_encoder, encoder_tokenizer) -> "ConstantVectors":
        """The encoder's vector of an empty window ([CLS][SEP], as the BOS position reads), in its pooling."""
        import torch

        with torch.no_grad():
            vector = prefix_encoder.embed_texts([""], encoder_tokenizer)[0]
        return cls(vector.float().cpu().numpy(), f"empty-window:{encoder_fingerprint(prefix_encoder)[:16]}")

    def fingerprint(self) -> str:
        return f"constant-{self.name}-" + hashlib.sha256(self.vector.tobytes()).hexdigest()[:16]

    def __call__(self, batch: dict) -> dict:
        return {"fusion_embeds": [np.tile(self.vector, (len(ids), 1)) for ids in batch["input_ids"]]}


class BagOfWordsVectors:
    """Count or tf-idf vectors of each prefix's text (the window of `context` at every position: tokens 0..j by
    default), from a scikit-learn vectorizer fitted on the training text with a vocabulary of at most `max_features`
    words. `width` is the fitted vocabulary's size."""

    def __init__(self, kind: str, train_texts: list[str], max_features: int, context: EncoderWindow = EncoderWindow()):
        from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

        if kind not in ("count", "tfidf"):
            raise ValueError(f"BagOfWordsVectors: kind must be count or tfidf, got {kind!r}.")
        self.kind, self.context = kind, context
        vectorizer = CountVectorizer if kind == "count" else TfidfVectorizer
        self.vectorizer = vectorizer(max_features=max_features, dtype=np.float32).fit(train_texts)
        self.width = len(self.vectorizer.vocabulary_)
        logger.info("%s vectors: %d words from %d training sentences", kind, self.width, len(train_texts))

    def fingerprint(self) -> str:
        digest = hashlib.sha256(f"{self.kind}|{sorted(self.vectorizer.vocabulary_.items())}".encode())
        if self.kind == "tfidf":
            digest.update(self.vectorizer.idf_.tobytes())
        digest.update(self.context.key.encode())
        return digest.hexdigest()

    def __call__(self, batch: dict) -> dict:
        prefixes = [self.context.texts(text, ends) for text, ends in zip(batch["text"], batch["offsets"])]
        matrix = self.vectorizer.transform([p for rows in prefixes for p in rows]).toarray().astype(np.float16)
        return {"fusion_embeds": np.split(matrix, np.cumsum([len(rows) for rows in prefixes])[:-1])}


@dataclass(frozen=True)
class SourceOptions:
    """What a factory may ask for, by keyword, beside FACTORY_KEYWORDS: the encoder's folder, the model's
    own encoder source (a PrefixEmbedder, made with the model), the window each position reads, the word budget of
    count and tfidf, the seed."""

    encoder_path: str | None = None
    encoder: VectorSource | None = None
    context: EncoderWindow = EncoderWindow()
    max_features: int = 1024
    seed: int = 0


def encoder_source(*, tokenizer, train_texts, encoder) -> VectorSource:
    return encoder


def zeros_source(*, tokenizer, train_texts, encoder_path) -> VectorSource:
    from transformers import AutoConfig

    return ZeroVectors(AutoConfig.from_pretrained(encoder_path).hidden_size)


def constant_source(*, tokenizer, train_texts, encoder_path) -> VectorSource:
    from transformers import AutoTokenizer

    from modeling_fusion_lstm.prefix_encoder_fusion_lstm import FusionLSTMPrefixEncoder

    prefix_encoder = FusionLSTMPrefixEncoder.from_encoder_pretrained(encoder_path).eval()
    return ConstantVectors.empty_window(prefix_encoder, AutoTokenizer.from_pretrained(encoder_path))


def shuffled_source(*, tokenizer, train_texts, encoder, seed) -> VectorSource:
    return ShuffledVectors(encoder, seed)


def count_source(*, tokenizer, train_texts, context, max_features) -> VectorSource:
    return BagOfWordsVectors("count", train_texts, max_features, context)


def tfidf_source(*, tokenizer, train_texts, context, max_features) -> VectorSource:
    return BagOfWordsVectors("tfidf", train_texts, max_features, context)


class SourceSpec(NamedTuple):
    factory: Callable  # factory(tokenizer=…, train_texts=…, [SourceOptions fields it names]) → VectorSource
    label: str  # the report's label
    description: str  # the help's
    fitted: bool = False  # fitted on the training text (needs --train_file)


# The built-in sources. A source whose factory takes `encoder` is made around the model's own encoder, once the model
# is built; the others make a model without encoder, fed their vectors.
SOURCES: dict[str, SourceSpec] = {
    "encoder": SourceSpec(encoder_source, "encoder", "the model's prefix encoder (the default)"),
    "zeros": SourceSpec(zeros_source, "zeros (control)", "all-zero vectors of the encoder's width: no information"),
    "constant": SourceSpec(constant_source, "one constant vector (control: the encoder's empty window)",
                           "the encoder's vector of an empty window ([CLS][SEP]) at every position: the control for "
                           "what a fixed e_j does"),
    "shuffled": SourceSpec(shuffled_source, "another sentence's e_j",
                           "the encoder's vectors of another sentence (of the same length where there is one)"),
    "count": SourceSpec(count_source, "word counts of the prefix",
                        "word counts of the prefix (CountVectorizer fitted on the training text)", fitted=True),
    "tfidf": SourceSpec(tfidf_source, "tf-idf of the prefix",
                        "tf-idf of the prefix (TfidfVectorizer fitted on the training text)", fitted=True),
}
OPTION_NAMES = {f.name for f in fields(SourceOptions)}
for _name, _spec in SOURCES.items():  # each built-in is called exactly as a user's factory is
    check_factory(_name, _spec.factory)


def sources_help() -> str:
    """The --fusion_vectors help's list, from SOURCES."""
    return "; ".join(f"{name}: {spec.description}" for name, spec in SOURCES.items())


def factory_of(name: str) -> Callable:
    """The factory of a built-in source, or a user's `module:attr`."""
    return SOURCES[name].factory if name in SOURCES else source_factory(name)


def needs_model_encoder(name: str) -> bool:
    """Whether the source is made around the model's own encoder (its factory names `encoder`): the model then keeps
    its encoder, and the source is made once the model is."""
    return "encoder" in factory_options(factory_of(name))


def needs_training_text(name: str) -> bool:
    """Whether the source is fitted on the training text (a user's source always receives it)."""
    return name not in SOURCES or SOURCES[name].fitted


def make_source(name: str, tokenizer, train_texts: list[str] | None, options: SourceOptions) -> VectorSource:
    """The source named by --fusion_vectors, built-in or `module:attr`: its factory called with FACTORY_KEYWORDS and
    the options it names; what it returns is checked to be a VectorSource."""
    factory = factory_of(name)
    check_factory(name, factory)
    source = factory(tokenizer=tokenizer, train_texts=train_texts,
                     **{option: getattr(options, option) for option in factory_options(factory)})
    check_vector_source(source, f"--fusion_vectors={name!r} returned an object that")
    return source


def donors(lengths: list[int], seed: int) -> tuple[list[int], int]:
    """For each sentence, another sentence to take e_j from: one of the same length, chosen by a seeded
    derangement within each length; a length that only one sentence has borrows from the sentence nearest in
    length. Returns the donors and how many sentences got one of another length."""
    rng = np.random.default_rng(seed)
    groups = defaultdict(list)
    for i, n in enumerate(lengths):
        groups[n].append(i)
    donor = [0] * len(lengths)
    alone = []
    for members in groups.values():
        if len(members) == 1:
            alone.append(members[0])
            continue
        order = rng.permutation(members)
        for a, b in zip(order, np.roll(order, -1)):  # a cycle: nobody keeps their own
            donor[a] = int(b)
    by_length = sorted(range(len(lengths)), key=lambda i: lengths[i])
    rank = {i: r for r, i in enumerate(by_length)}
    for i in alone:
        r = rank[i]
        donor[i] = by_length[r - 1] if r > 0 else by_length[min(r + 1, len(by_length) - 1)]
    return donor, len(alone)


def shuffle_vectors(dataset: Dataset, seed: int, split: str) -> Dataset:
    """`dataset` (with fusion_embeds) where every sentence carries another sentence's e_j (see `donors`); a donor
    of another length is cut or its last vector repeated to fit."""
    lengths = [len(ids) for ids in dataset["input_ids"]]
    if len(lengths) < 2:
        raise ValueError(f"{split}: shuffled vectors need at least two sentences.")
    donor, other_length = donors(lengths, seed)
    vectors = dataset.select_columns(["fusion_embeds"])

    def fit(batch, indices):
        out = []
        for i in indices:
            taken = np.asarray(vectors[donor[i]]["fusion_embeds"], dtype=np.float16)
            positions = np.minimum(np.arange(lengths[i]), len(taken) - 1)
            out.append(taken[positions])
        return {"fusion_embeds": out}

    logger.info("%s: e_j shuffled between sentences (seed %d); %d of %d took them from a sentence of another length",
                split, seed, other_length, len(lengths))
    return dataset.map(fit, with_indices=True, batched=True, features=dataset.features,
                       desc=f"Shuffling e_j ({split})", new_fingerprint=f"{dataset._fingerprint}-shuffled-{seed}")


class ShuffledVectors:
    """Another sentence's e_j (see `donors`), from the vectors of `inner` (the model's encoder): a source that wraps
    another. Its vectors are the inner source's, cached under the inner's fingerprint (shared with the runs that fuse
    them unshuffled); the cache hands each split to `rearrange`, which gives every sentence its donor's."""

    def __init__(self, inner: VectorSource, seed: int):
        self.inner, self.seed = inner, seed
        self.width = inner.width

    def fingerprint(self) -> str:
        return self.inner.fingerprint()

    def __call__(self, batch: dict) -> dict:
        return self.inner(batch)

    def rearrange(self, dataset: Dataset, split: str) -> Dataset:
        return shuffle_vectors(dataset, self.seed, split)
