"""FusionLSTM configuration."""

from enum import Enum
from typing import NamedTuple

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec


class FusionStage(str, Enum):
    """Where e_j enters the model; each stage is one module in modeling_fusion_lstm.py (FUSION_STAGES)."""

    NONE = "none"  # no e_j: the LSTM LM baseline
    LATE = "late"  # combined with the LSTM output h_j before the dense layer
    EARLY = "early"  # the LSTM's initial state, the LSTM restarted at every position
    ALONE = "alone"  # no LSTM: e_j is all the model reads


class FusionSpec(NamedTuple):
    """What a fusion strategy is, as data. The tensor function of each lives in modeling_fusion_lstm.py
    (FUSION_FUNCTIONS); everything else (choices, help texts, card descriptions, projections, widths) is derived
    from this table."""

    paper_variant: int | None  # the paper's numbering, fusion 0 … 6 (None: the paper's probe without a number)
    stage: FusionStage
    elementwise: bool  # combines e_j with the LSTM state element-wise, so e_j is projected to hidden_size
    concatenates: bool  # the fused vector is [h_j; e_j]: the dense layer reads hidden_size + e_j's width
    description: str  # one line, for help texts and model cards


# The one table of fusion strategies. Adding one: a row here and its function in FUSION_FUNCTIONS.
FUSIONS: dict[str, FusionSpec] = {
    "none": FusionSpec(
        paper_variant=0, stage=FusionStage.NONE, elementwise=False, concatenates=False,
        description="no fusion, the LSTM LM baseline"),
    "concat": FusionSpec(
        paper_variant=1, stage=FusionStage.LATE, elementwise=False, concatenates=True,
        description="late fusion: [h_j; e_j] goes to the dense layer"),
    "add": FusionSpec(
        paper_variant=2, stage=FusionStage.LATE, elementwise=True, concatenates=False,
        description="late fusion: h_j + e_j goes to the dense layer"),
    "multiply": FusionSpec(
        paper_variant=3, stage=FusionStage.LATE, elementwise=True, concatenates=False,
        description="late fusion: h_j ⊙ e_j goes to the dense layer"),
    "init_h": FusionSpec(
        paper_variant=4, stage=FusionStage.EARLY, elementwise=True, concatenates=False,
        description="early fusion: the LSTM restarts from h0 = e_j, c0 = 0 at each j"),
    "init_c": FusionSpec(
        paper_variant=5, stage=FusionStage.EARLY, elementwise=True, concatenates=False,
        description="early fusion: the LSTM restarts from h0 = 0, c0 = e_j at each j"),
    "init_hc": FusionSpec(
        paper_variant=6, stage=FusionStage.EARLY, elementwise=True, concatenates=False,
        description="early fusion: the LSTM restarts from h0 = c0 = e_j at each j"),
    "embedding_only": FusionSpec(
        paper_variant=None, stage=FusionStage.ALONE, elementwise=False, concatenates=False,
        description="the artefact-only probe: no LSTM, an MLP e_j → hidden_size → projection_size (ReLU) predicts "
                    "token j+1"),
}
FUSION_CHOICES = tuple(FUSIONS)
# The strategy without fusion, which every change is measured against: the one row of FUSIONS at stage NONE.
_baselines = [name for name, spec in FUSIONS.items() if spec.stage == FusionStage.NONE]
if len(_baselines) != 1:
    raise ValueError(f"FUSIONS must hold exactly one strategy at stage NONE (the baseline), got {_baselines}.")
BASELINE_FUSION = _baselines[0]
# The paper's fusion, the one its headline result is about (variant 1, late: [h_j; e_j])
PAPER_FUSION = "concat"


class ContextSpec(NamedTuple):
    """What a fusion_context is, as data. The window of each single-window mode (which tokens the encoder reads at
    position j) lives in prefix_encoder_fusion_lstm.py (CONTEXT_WINDOWS, checked against this table at import);
    choices, validation, help texts, EncoderWindow's properties and the report's labels are derived from this table."""

    encoder_reads: str  # what the encoder reads at position j, after the first token ([CLS], the LM's BOS)
    vectors: str  # "position": one window per position; "sentence": one per sentence; "sample": the whole sample
    reads_document: bool  # reads the document's previous sentences (needs context_sentences ≥ 1)
    probe: bool  # a sentence-level probe of the paper that reads the sentence's length or future: not causal
    parts: tuple[str, ...]  # the single-window modes whose vectors make e_j, one after another
    description: str  # one line, for help texts and model cards
    reads_fraction: bool = False  # its window depends on fusion_context_fraction


# The one table of what the encoder reads. Adding a mode: a row here and its window in CONTEXT_WINDOWS.
CONTEXTS: dict[str, ContextSpec] = {
    "prefix": ContextSpec(
        encoder_reads="tokens 0..j of the sentence", vectors="position", reads_document=False, probe=False,
        parts=("prefix",), description="tokens 0..j of the sentence (causal: the paper's model)"),
    "sentence": ContextSpec(
        encoder_reads="the whole sentence", vectors="sample", reads_document=False, probe=True, parts=("sentence",),
        description="the whole sentence at every position (the paper's leaky probe: not causal)"),
    "subr": ContextSpec(
        encoder_reads="tokens 0..min(j, c), c = fraction · the sentence's length", vectors="position",
        reads_document=False, probe=True, parts=("subr",), reads_fraction=True,
        description="only the sentence's first part (the paper's sub-prefix feeder: reads the length, a probe)"),
    "subl": ContextSpec(
        encoder_reads="tokens c..j, c = fraction · the sentence's length", vectors="position", reads_document=False,
        probe=True, parts=("subl",), reads_fraction=True,
        description="the prefix without the sentence's first part (the paper's sub-prefix feeder: reads the length, "
                    "a probe)"),
    "previous": ContextSpec(
        encoder_reads="the previous K sentences of the document", vectors="sentence", reads_document=True,
        probe=False, parts=("previous",),
        description="the previous K sentences of the document: one vector for the whole sentence"),
    "document": ContextSpec(
        encoder_reads="the previous K sentences and tokens 0..j of the sentence", vectors="position",
        reads_document=True, probe=False, parts=("document",),
        description="the previous K sentences and tokens 0..j in one encoder input"),
    "prefix+previous": ContextSpec(
        encoder_reads="tokens 0..j of the sentence, and apart the previous K sentences", vectors="position",
        reads_document=True, probe=False, parts=("prefix", "previous"),
        description="the prefix's vector and the previous K sentences' side by side (twice the encoder's width)"),
}
FUSION_CONTEXT_CHOICES = tuple(CONTEXTS)
# the modes whose encoder reads the previous sentences of the document, and the sentence-level probes
DOCUMENT_CONTEXTS = tuple(mode for mode, spec in CONTEXTS.items() if spec.reads_document)
SENTENCE_PROBES = tuple(mode for mode, spec in CONTEXTS.items() if spec.probe)
for _mode, _spec in CONTEXTS.items():  # a join is made of single-window modes of this table
    if not all(part in CONTEXTS and CONTEXTS[part].parts == (part,) for part in _spec.parts):
        raise ValueError(f"CONTEXTS[{_mode!r}].parts {_spec.parts}: each part must be a single-window mode of CONTEXTS.")
FUSION_DROPOUT_MODE_CHOICES = ("vector", "element")
ENCODER_POOLING_CHOICES = ("cls", "mean", "pooler", "last")
# Width of BERT-base, the paper's encoder; used when there is neither an encoder nor an explicit width.
PAPER_FUSION_EMBEDDING_SIZE = 768


def encoder_is_causal(encoder_config) -> bool:
    """Whether the encoder is a decoder-only model (GPT-2, Llama, …): a causal LM without a masked-LM head, whose
    first token sees only itself."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = getattr(encoder_config, "model_type", None)
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


@strict
class FusionLSTMConfig(PreTrainedConfig):
    r"""
    Configuration of a sentence-embedding fusion LSTM language model (Zouhar, Mosbach, Klakow 2022,
    arXiv 2208.02402). The defaults are the paper's architecture: token embedding 512 → LSTM 768 → fusion →
    dense 512 → vocabulary.

    vocab_size (`int`, defaults to 30522): size of the LM vocabulary (the encoder tokenizer's by default).
    embedding_size (`int`, defaults to 512): width of the token embeddings fed to the LSTM.
    hidden_size (`int`, defaults to 768): width of the LSTM state h_j (and c_j).
    num_hidden_layers (`int`, defaults to 1): number of stacked LSTM layers.
    projection_size (`int`, defaults to 512): width of the dense layer between fusion and the output layer.
    dropout (`float`, defaults to 0.0): dropout on token embeddings, between LSTM layers and on the LSTM output.
    fusion_dropout (`float`, defaults to 0.0): in training, the probability that e_j is dropped; the paper's dynamic
        schedule changes it during training (see run_clm.py `--fusion_dropout_schedule`).
    fusion_dropout_mode (`str`, defaults to `"vector"`): `vector`: the whole e_j of a position is replaced by zeros,
        without rescaling; `element`: each element of e_j is dropped and the rest scaled by 1/(1-p)
        (`nn.functional.dropout`, the paper's code).
    fusion (`str`, defaults to `"concat"`): how the prefix embedding e_j enters the LSTM, a key of `FUSIONS`:
        `none`, `concat`, `add`, `multiply` (late fusion, combined with h_j), `init_h`, `init_c`, `init_hc`
        (early fusion, e_j is the LSTM's initial state and the LSTM restarts at every position) or `embedding_only`
        (the paper's artefact-only probe: no LSTM, an MLP on e_j alone).
    fusion_context (`str`, defaults to `"prefix"`): what the encoder reads at position j, a key of `CONTEXTS` (the
        table of what each mode reads; its window is in prefix_encoder_fusion_lstm.py's CONTEXT_WINDOWS): `prefix`,
        `sentence`, `subr`, `subl`, `previous`, `document` or `prefix+previous`.
    fusion_context_fraction (`float`, defaults to 0.5): k of the sub-prefix feeders, in [0, 1].
    encoder_pooling (`str`, defaults to `"cls"`): how the encoder's token states become e_j: `cls` (first
        token), `mean` (mean over the encoder input, [CLS] and [SEP] included), `pooler` (the encoder's pooler) or
        `last` (the last token's: for causal-LM encoders such as GPT-2, whose last token alone has read the prefix).
    freeze_encoder (`bool`, defaults to `True`): keep the encoder frozen (no gradients, eval mode).
    encoder (`dict` or `PreTrainedConfig`, *optional*): the encoder's own config; absent for models that only
        take `fusion_embeds` (and for `fusion="none"`).
    fusion_embedding_size (`int`, *optional*): width of e_j; taken from the encoder when there is one (times the
        number of vectors of fusion_context), 768 (BERT-base) otherwise.
    fusion_projection (`bool`, defaults to `True`): learn a linear map from e_j's width to `hidden_size` where a
        fusion needs equal widths (`add`, `multiply`, `init_*`) and they differ.
    context_sentences (`int`, defaults to 0): how many previous sentences of the same document each sentence was
        trained with (0: sentence-level, the paper).
    context_as_tokens (`bool`, defaults to `False`): the LSTM reads those sentences as tokens before the sentence:
        BOS, each context sentence and EOS, then the sentence (the context is conditioned on, never scored).
        Otherwise the context tokens are in the input for the encoder only (fusion_context `previous`, `document`).
    max_context_length (`int`, defaults to 128): at most this many context tokens, the most recent.
    """

    model_type = "fusion_lstm"
    sub_configs_defaults = {"encoder": SubConfigSpec(config_class=AutoConfig, model_type="bert", optional=True)}

    vocab_size: int = 30522
    embedding_size: int = 512
    hidden_size: int = 768
    num_hidden_layers: int = 1
    projection_size: int = 512
    dropout: float = 0.0
    fusion_dropout: float = 0.0
    fusion_dropout_mode: str = "vector"
    fusion: str = "concat"
    fusion_context: str = "prefix"
    fusion_context_fraction: float = 0.5
    encoder_pooling: str = "cls"
    freeze_encoder: bool = True
    encoder: PreTrainedConfig | dict | None = None
    fusion_embedding_size: int | None = None
    fusion_projection: bool = True
    context_sentences: int = 0
    context_as_tokens: bool = False
    max_context_length: int = 128
    initializer_range: float = 0.02
    use_cache: bool = True
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self, **kwargs):
        # Validated here rather than in `validate_*` hooks so that a plain ValueError reaches the user.
        _check_choice("fusion", self.fusion, FUSION_CHOICES)
        _check_choice("fusion_context", self.fusion_context, FUSION_CONTEXT_CHOICES)
        _check_choice("encoder_pooling", self.encoder_pooling, ENCODER_POOLING_CHOICES)
        _check_choice("fusion_dropout_mode", self.fusion_dropout_mode, FUSION_DROPOUT_MODE_CHOICES)
        if not 0.0 <= self.fusion_context_fraction <= 1.0:
            raise ValueError(
                f"FusionLSTMConfig.fusion_context_fraction must be in [0, 1], got {self.fusion_context_fraction}."
            )
        for field in ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "projection_size"):
            if getattr(self, field) < 1:
                raise ValueError(f"FusionLSTMConfig.{field} must be a positive integer, got {getattr(self, field)}.")
        if self.fusion_embedding_size is not None and self.fusion_embedding_size < 1:
            raise ValueError(f"FusionLSTMConfig.fusion_embedding_size must be a positive integer (or unset, to take the "
                             f"encoder's), got {self.fusion_embedding_size}.")
        if self.initializer_range < 0:
            raise ValueError(f"FusionLSTMConfig.initializer_range must be 0 or more, got {self.initializer_range}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"FusionLSTMConfig.dropout must be in [0, 1), got {self.dropout}.")
        if not 0.0 <= self.fusion_dropout <= 1.0:
            raise ValueError(f"FusionLSTMConfig.fusion_dropout must be in [0, 1], got {self.fusion_dropout}.")
        self._check_context()
        super().__post_init__(**kwargs)
        self._resolve_fusion_embedding_size()
        if self.encoder is not None and self.encoder_pooling == "cls" and encoder_is_causal(self.encoder):
            raise ValueError(
                f"FusionLSTMConfig: the encoder ({self.encoder.model_type}) is a causal LM, whose first token sees only "
                "itself, so encoder_pooling='cls' would give every prefix the same vector: use encoder_pooling='last' "
                "(the state of the prefix's last token, which has read all of it) or 'mean'."
            )
        if self.is_embedding_only and not self.fusion_projection:
            raise ValueError("FusionLSTMConfig: fusion='embedding_only' reads e_j through its MLP's first layer, "
                             "the fusion projection: set fusion_projection=True.")
        if self.needs_projection and not self.fusion_projection:
            raise ValueError(
                f"FusionLSTMConfig: fusion={self.fusion!r} combines e_j with the LSTM state element-wise, so "
                f"fusion_embedding_size ({self.fusion_embedding_size}) must equal hidden_size ({self.hidden_size}). "
                "Set fusion_projection=True to learn a linear map between them, or make the widths equal."
            )
        if self.tie_word_embeddings and self.projection_size != self.embedding_size:
            raise ValueError(
                f"FusionLSTMConfig: tie_word_embeddings=True needs projection_size ({self.projection_size}) == "
                f"embedding_size ({self.embedding_size}), since the output layer reuses the token embeddings."
            )

    def _check_context(self):
        if self.context_sentences < 0:
            raise ValueError(f"FusionLSTMConfig.context_sentences must be 0 or more, got {self.context_sentences}.")
        if self.max_context_length < 1:
            raise ValueError(f"FusionLSTMConfig.max_context_length must be at least 1, got {self.max_context_length}.")
        reads_document = self.fusion_context in DOCUMENT_CONTEXTS
        if reads_document and not self.context_sentences:
            raise ValueError(f"FusionLSTMConfig.fusion_context={self.fusion_context!r} embeds the previous sentences of "
                             "the document: set context_sentences ≥ 1.")
        if reads_document and not self.uses_fusion:
            raise ValueError(f"FusionLSTMConfig.fusion_context={self.fusion_context!r} with fusion='none': nothing is "
                             "fused; choose a fusion, or read the context as tokens (context_as_tokens=True).")
        if self.context_as_tokens and not self.context_sentences:
            raise ValueError("FusionLSTMConfig.context_as_tokens needs context_sentences ≥ 1: the sentences to read.")
        if self.context_sentences and not (self.context_as_tokens or reads_document):
            raise ValueError("FusionLSTMConfig.context_sentences: nothing reads the context; set context_as_tokens=True "
                             f"or fusion_context to one of {', '.join(DOCUMENT_CONTEXTS)}.")
        if self.context_sentences and self.uses_fusion and self.fusion_context in SENTENCE_PROBES:
            raise ValueError(f"FusionLSTMConfig.fusion_context={self.fusion_context!r} is a sentence-level probe: use "
                             "it without context_sentences.")

    def _resolve_fusion_embedding_size(self):
        encoder_width = getattr(self.encoder, "hidden_size", None)
        if encoder_width is not None:
            encoder_width *= len(CONTEXTS[self.fusion_context].parts)
        if encoder_width is not None and self.fusion_embedding_size not in (None, encoder_width):
            raise ValueError(
                f"FusionLSTMConfig: fusion_embedding_size={self.fusion_embedding_size} but the encoder gives vectors "
                f"of width {encoder_width} (fusion_context={self.fusion_context!r}); leave fusion_embedding_size unset "
                "to take it from the encoder."
            )
        if self.fusion_embedding_size is None:
            self.fusion_embedding_size = encoder_width or PAPER_FUSION_EMBEDDING_SIZE

    @property
    def fusion_spec(self) -> FusionSpec:
        return FUSIONS[self.fusion]

    @property
    def uses_fusion(self) -> bool:
        """Whether the model reads prefix embeddings e_j at all (every strategy but the `none` baseline)."""
        return self.fusion_spec.stage != FusionStage.NONE

    @property
    def is_early_fusion(self) -> bool:
        return self.fusion_spec.stage == FusionStage.EARLY

    @property
    def is_embedding_only(self) -> bool:
        return self.fusion_spec.stage == FusionStage.ALONE

    @property
    def uses_encoder(self) -> bool:
        """Whether the model holds an encoder that computes e_j (otherwise e_j comes in as `fusion_embeds`)."""
        return self.uses_fusion and self.encoder is not None

    @property
    def needs_projection(self) -> bool:
        """Whether e_j must be mapped to `hidden_size` before fusion (element-wise and initial-state fusions; always
        for embedding_only, whose MLP starts with that map)."""
        widths_differ = self.fusion_embedding_size != self.hidden_size
        return (self.fusion_spec.elementwise and widths_differ) or self.is_embedding_only

    @property
    def encoder_reads_lm_ids(self) -> bool:
        """Whether the encoder shares the LM's vocabulary, so it can read the LM's token ids; otherwise (e.g. a
        trained BPE) e_j is embedded from the text of each prefix, tokenized by the encoder's own tokenizer. An
        encoder config that does not state its vocabulary is taken to share the LM's."""
        if self.encoder is None:
            return False
        return getattr(self.encoder, "vocab_size", self.vocab_size) == self.vocab_size

    @property
    def encoder_reads_text(self) -> bool:
        """Whether the model holds an encoder that cannot read its token ids, so e_j of each prefix is embedded from
        the prefix's text with the encoder's own tokenizer (training, generation, the model card say so)."""
        return self.uses_encoder and not self.encoder_reads_lm_ids

    @property
    def fused_size(self) -> int:
        """Width of the fused vector that the dense layer reads."""
        extra = self.fusion_embedding_size if self.fusion_spec.concatenates else 0
        return self.hidden_size + extra


def _check_choice(field: str, value, allowed: tuple[str, ...]):
    if value not in allowed:
        raise ValueError(f"FusionLSTMConfig.{field}={value!r} is not supported; allowed values: {', '.join(allowed)}.")


__all__ = ["BASELINE_FUSION", "CONTEXTS", "FUSIONS", "ContextSpec", "FusionLSTMConfig", "FusionSpec", "FusionStage", "PAPER_FUSION"]
