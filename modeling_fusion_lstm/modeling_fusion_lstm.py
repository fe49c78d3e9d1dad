"""PyTorch FusionLSTM: an LSTM language model with a pretrained sentence encoder's prefix embeddings fused in
(Zouhar, Mosbach, Klakow 2022, "Fusing Sentence Embeddings Into LSTM-based Autoregressive Language Models")."""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.generation import GenerationMixin
from transformers.modeling_utils import slice_logits_to_keep
from transformers.utils import ModelOutput

from .configuration_fusion_lstm import FUSIONS, FusionLSTMConfig, FusionStage
from .inputs_fusion_lstm import SequenceSoFar, check_keywords, refuse_context_length, sequence_so_far
from .prefix_encoder_fusion_lstm import (
    EncoderWindow, FusionLSTMPrefixEncoder, PrefixRows, TextPrefixes, compact_rows, join_context,
)


# ----------------------------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------------------------


def is_right_padded(mask: torch.Tensor) -> bool:
    """True when every row is real tokens followed only by padding (the training layout)."""
    return bool((mask[:, 1:] <= mask[:, :-1]).all())


def scatter_to_positions(compact: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Inverse of `compact_rows` for outputs: (batch, n, width) compact rows → (batch, seq_len, width) at the real
    positions of `mask` (batch, seq_len); padded positions get zeros."""
    rank = (mask.cumsum(1) - 1).clamp(min=0)
    gathered = compact.gather(1, rank.unsqueeze(-1).expand(-1, -1, compact.shape[-1]))
    return gathered * mask.unsqueeze(-1).to(gathered.dtype)


# ----------------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------------


# The tensor side of FUSIONS (configuration_fusion_lstm.py, which says what each strategy is and at which stage it
# acts). One signature: fusion(h, c, e) → (h, c), e_j fused into an LSTM state, e_j already projected to hidden_size
# where FUSIONS says elementwise. Early fusion applies it to the zero initial state (h0, c0) before the LSTM runs;
# late fusion to the LSTM output h_j (c is None); embedding_only to no state at all (h and c are None).
FUSION_FUNCTIONS: dict[str, Callable] = {
    "none": lambda h, c, e: (h, c),  # 0: the plain LSTM LM baseline
    "concat": lambda h, c, e: (torch.cat([h, e], dim=-1), c),  # 1: [h_j; e_j]
    "add": lambda h, c, e: (h + e, c),  # 2: h_j + e_j
    "multiply": lambda h, c, e: (h * e, c),  # 3: h_j ⊙ e_j
    "init_h": lambda h, c, e: (e, c),  # 4: h0 = e_j
    "init_c": lambda h, c, e: (h, e),  # 5: c0 = e_j
    "init_hc": lambda h, c, e: (e, e),  # 6: h0 = c0 = e_j
    "embedding_only": lambda h, c, e: (torch.relu(e), c),  # the artefact-only probe: no h_j, ReLU(W e_j + b) alone
}
if set(FUSION_FUNCTIONS) != set(FUSIONS):
    raise ImportError(
        "FUSIONS (configuration_fusion_lstm.py) and FUSION_FUNCTIONS (modeling_fusion_lstm.py) name different "
        f"strategies: {sorted(set(FUSIONS) ^ set(FUSION_FUNCTIONS))}. Each strategy needs a row in both."
    )


class FusionLSTMStage(nn.Module):
    """What the module of every stage (FusionSpec.stage) shares: the strategy's fusion function, the projection of
    e_j to hidden_size where the table asks for one, and the LSTM (except embedding_only's).

    forward(token_embeds, inputs, fusion_embeds, state, need_state, embed_tokens) → (fused, hidden):
        token_embeds (batch, num_new, E): the new tokens' embeddings after dropout; inputs: `SequenceSoFar`;
        fusion_embeds (batch, num_new, F) or None; state: `FusionLSTMState` or None; embed_tokens(ids): embeddings
        with dropout, for a stage that rereads the history. Returns the fused vector at each new position
        (batch, num_new, config.fused_size) and the LSTM state (h, c) after the last real token (None where the
        stage keeps none).
    """

    has_lstm = True
    # whether the next call needs the whole sequence so far (early fusion reruns the LSTM over it)
    keeps_sequence = False
    # after the dense layer: the artefact-only MLP has ReLU there, the LSTM models nothing
    dense_activation = nn.Identity

    def __init__(self, config: FusionLSTMConfig):
        super().__init__()
        self.config = config
        self.fusion_function = FUSION_FUNCTIONS[config.fusion]
        self.lstm = nn.LSTM(
            config.embedding_size,
            config.hidden_size,
            num_layers=config.num_hidden_layers,
            dropout=config.dropout if config.num_hidden_layers > 1 else 0.0,
            batch_first=True,
        ) if self.has_lstm else None
        self.fusion_projection = (
            nn.Linear(config.fusion_embedding_size, config.hidden_size) if config.needs_projection else None
        )
        self.dropout = nn.Dropout(config.dropout)  # on the LSTM output

    def project(self, fusion_embeds: torch.Tensor | None) -> torch.Tensor | None:
        if fusion_embeds is None or self.fusion_projection is None:
            return fusion_embeds
        return self.fusion_projection(fusion_embeds)


class LateFusionLSTM(FusionLSTMStage):
    """Stages none and late: the LSTM runs once over the sequence, continuing from the state, and each output h_j is
    combined with e_j (the baseline's function leaves h_j as it is)."""

    def forward(self, token_embeds, inputs, fusion_embeds, state, need_state: bool, embed_tokens):
        previous = state.hidden if state is not None else None
        if previous is None and inputs.context_as_tokens:
            output, hidden = self.run_after_context(token_embeds, inputs, embed_tokens, need_state)
        else:
            output, hidden = self.run_sequence(token_embeds, inputs.new_mask, previous, need_state)
        fused, _ = self.fusion_function(self.dropout(output), None, self.project(fusion_embeds))
        return fused, hidden

    def run_after_context(self, token_embeds, inputs, embed_tokens, need_state: bool):
        """The LSTM over BOS, the document's previous sentences, then the sentence's tokens (context_as_tokens):
        the outputs at the sentence's positions (BOS's is the one after the context), (batch, num_new, H)."""
        mask = inputs.new_mask
        joined, context_tokens = join_context(compact_rows(token_embeds, mask), embed_tokens(inputs.context_input_ids),
                                              inputs.context_attention_mask)
        lengths = mask.sum(1) + context_tokens
        joined_mask = (torch.arange(joined.shape[1], device=joined.device).unsqueeze(0) < lengths.unsqueeze(1)).long()
        output, hidden = self.run_sequence(joined, joined_mask, None, need_state)
        # the sentence's token k (its k-th real token) sits at k + n in the joined row; BOS's output is the context's
        index = (torch.arange(mask.shape[1], device=mask.device).unsqueeze(0) + context_tokens.unsqueeze(1))
        index = index.clamp(max=joined.shape[1] - 1).unsqueeze(-1).expand(-1, -1, output.shape[-1])
        return scatter_to_positions(output.gather(1, index), mask), hidden

    def run_sequence(self, embeds, mask, hidden, need_state: bool):
        """LSTM over embeds (batch, n, E) from `hidden` ((h, c), each (layers, batch, H), or None).
        Padded positions (mask 0) are skipped: each row's real tokens run as one contiguous sequence."""
        if mask is None or bool(mask.all()) or (is_right_padded(mask) and not need_state):
            # right padding only follows the real tokens, so it cannot change their outputs
            return self.lstm(embeds, hidden)
        lengths = mask.sum(1)
        if bool((lengths == 0).any()) and hidden is None:
            raise ValueError("A sequence of the batch has no real token (its attention_mask is all zeros).")
        packed = pack_padded_sequence(
            compact_rows(embeds, mask), lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        output, (h, c) = self.lstm(packed, hidden)
        output, _ = pad_packed_sequence(output, batch_first=True, total_length=embeds.shape[1])
        if hidden is not None and bool((lengths == 0).any()):
            # a continuation step whose new tokens are all padding leaves that row's state as it was
            empty = (lengths == 0).view(1, -1, 1)
            h, c = torch.where(empty, hidden[0], h), torch.where(empty, hidden[1], c)
        return scatter_to_positions(output, mask), (h, c)


class EarlyFusionLSTM(FusionLSTMStage):
    """Stage early: the LSTM restarts at every position j from the state that the fusion function builds from e_j
    and runs over tokens 0..j. All prefixes of the batch are rows of one LSTM run stepped over time (work
    ~ seq_len²/2 per sequence, no Python loop over positions; see `run_rows`). With several layers, every layer
    starts from the same e_j-derived state. It keeps no recurrent state: a continuation reruns the whole prefix."""

    keeps_sequence = True

    def forward(self, token_embeds, inputs, fusion_embeds, state, need_state: bool, embed_tokens):
        embeds = embed_tokens(inputs.input_ids) if inputs.has_history else token_embeds
        rows = PrefixRows.of(inputs.attention_mask, inputs.new_mask.shape[1])
        sequences, lengths = compact_rows(embeds, inputs.attention_mask), rows.length
        if inputs.context_as_tokens:  # each run reads BOS, the previous sentences, then tokens 1..j
            sequences, context_tokens = join_context(sequences, embed_tokens(inputs.context_input_ids),
                                                     inputs.context_attention_mask)
            lengths = lengths + context_tokens[rows.batch_index]
        projected = self.project(fusion_embeds[rows.new_mask])
        zeros = embeds.new_zeros(projected.shape[0], self.config.hidden_size)
        h0, c0 = self.fusion_function(zeros, zeros, projected)
        last = self.run_rows(sequences, rows.batch_index, lengths, h0, c0)
        return self.dropout(rows.to_positions(last)), None

    def run_rows(self, sequences, batch_index, lengths, h0, c0) -> torch.Tensor:
        """The LSTM over row r = sequences[batch_index[r], :lengths[r]] from the state (h0[r], c0[r]), for all rows
        at once; returns each row's last output (rows, H).

        The same cell as nn.LSTM (gates i, f, g, o; same weights), stepped by hand because the rows share their
        tokens: the first layer's input projection is computed once per token, not once per row, and at step t
        only the rows longer than t (a prefix of the rows sorted by length) are computed.
        """
        order = torch.argsort(lengths, descending=True, stable=True)
        lengths, batch_index = lengths[order], batch_index[order]
        width = int(lengths[0])
        active = (lengths.unsqueeze(1) > torch.arange(width, device=lengths.device)).sum(0).tolist()
        h0, c0 = h0[order], c0[order]
        layer_inputs = None
        for layer in range(self.config.num_hidden_layers):
            w_ih, w_hh = getattr(self.lstm, f"weight_ih_l{layer}"), getattr(self.lstm, f"weight_hh_l{layer}")
            bias = getattr(self.lstm, f"bias_ih_l{layer}") + getattr(self.lstm, f"bias_hh_l{layer}")
            if layer == 0:
                # (batch, width, 4H) → one (batch, 4H) tensor per step; unbind keeps the backward to one stack
                token_gates = nn.functional.linear(sequences[:, :width], w_ih, bias).unbind(1)
            h, c, outputs, finished = h0, c0, [], []
            for t, n in enumerate(active):
                if layer == 0:
                    gates = token_gates[t][batch_index[:n]]
                else:
                    gates = nn.functional.linear(layer_inputs[t], w_ih, bias)
                gates = gates + nn.functional.linear(h[:n], w_hh)
                i, f, g, o = gates.chunk(4, dim=1)
                c = torch.sigmoid(f) * c[:n] + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outputs.append(h)
                n_next = active[t + 1] if t + 1 < width else 0
                finished.append(h[n_next:])  # rows of length t + 1 end here
            if layer + 1 < self.config.num_hidden_layers and self.lstm.dropout and self.training:
                outputs = [nn.functional.dropout(x, self.lstm.dropout) for x in outputs]
            layer_inputs = outputs
        # rows ended longest-last: reverse to the sorted order, then undo the sort
        last = torch.cat(finished[::-1])
        return last.index_select(0, torch.argsort(order))


class EmbeddingOnlyMLP(FusionLSTMStage):
    """Stage alone, the artefact-only probe: no LSTM; ReLU(W₁ e_j) (W₁ the fusion projection), then the model's
    dense layer with ReLU: an MLP on e_j alone."""

    has_lstm = False
    dense_activation = nn.ReLU

    def forward(self, token_embeds, inputs, fusion_embeds, state, need_state: bool, embed_tokens):
        fused, _ = self.fusion_function(None, None, self.project(fusion_embeds))
        return fused, None


# The module of each stage of FUSIONS
FUSION_STAGES: dict[FusionStage, type[FusionLSTMStage]] = {
    FusionStage.NONE: LateFusionLSTM,
    FusionStage.LATE: LateFusionLSTM,
    FusionStage.EARLY: EarlyFusionLSTM,
    FusionStage.ALONE: EmbeddingOnlyMLP,
}


# ----------------------------------------------------------------------------------------------------------------------
# Pretrained model base
# ----------------------------------------------------------------------------------------------------------------------


class FusionLSTMPreTrainedModel(PreTrainedModel):
    config: FusionLSTMConfig
    config_class = FusionLSTMConfig
    base_model_prefix = "model"
    _is_stateful = True
    supports_gradient_checkpointing = False
    _no_split_modules = sorted({stage.__name__ for stage in FUSION_STAGES.values()})

    def _init_weights(self, module: nn.Module):
        # The encoder is a PreTrainedModel and is initialised by its own _init_weights.
        super()._init_weights(module)
        if isinstance(module, nn.LSTM):
            # PyTorch's own LSTM initialisation, U(-1/sqrt(H), 1/sqrt(H)), as the paper's code used
            bound = module.hidden_size**-0.5
            for param in module.parameters():
                init.uniform_(param, -bound, bound)

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # the recurrent state travels as `state`, not as a KV cache
        return False

    def save_pretrained(self, save_directory, *args, **kwargs):
        if self._auto_class is not None:
            # the code files serve both heads, whichever of them is saved
            module = "modeling_fusion_lstm"
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                "AutoModel": f"{module}.FusionLSTMModel",
                "AutoModelForCausalLM": f"{module}.FusionLSTMForCausalLM",
            }
        return super().save_pretrained(save_directory, *args, **kwargs)

    def set_fusion_dropout(self, rate: float | None, during_eval: bool = False):
        """The probability that e_j is dropped from now on (a schedule's current value), leaving
        config.fusion_dropout, which is saved with the model, as it is; None returns to the config's.

        Dropout acts in training only, unless `during_eval`: then in evaluation too, as the paper's code did (and
        `set_fusion_dropout(1.0, during_eval=True)` evaluates the model with every e_j zeroed)."""
        if rate is not None and not 0.0 <= rate <= 1.0:
            raise ValueError(f"fusion dropout must lie in [0, 1], got {rate}.")
        self.base_model.fusion_dropout_rate = rate
        self.base_model.fusion_dropout_during_eval = during_eval

    def num_lm_parameters(self) -> int:
        """Parameters of the language model itself: all but the prefix encoder's."""
        encoder = self.base_model.prefix_encoder
        skip = {id(p) for p in encoder.parameters()} if encoder is not None else set()
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)


# ----------------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class FusionLSTMState:
    """Recurrent state carried between calls (and between `generate` steps).

    hidden: (h, c), each (num_hidden_layers, batch, hidden_size): the LSTM state after the last real token; None for
        early fusion, which restarts the LSTM at every position.
    input_ids, attention_mask (batch, seq_len): the sequence seen so far; kept when the next positions need the
        whole prefix (the encoder's prefix embedding, early fusion), None otherwise.
    context_input_ids, context_attention_mask (batch, context_len): the document context the sequence was read
        with, for a model that reads one (each later step must pass the same); None otherwise.
    """

    hidden: tuple[torch.Tensor, torch.Tensor] | None = None
    input_ids: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    context_input_ids: torch.Tensor | None = None
    context_attention_mask: torch.Tensor | None = None

    def index_select(self, index: torch.Tensor) -> "FusionLSTMState":
        """The state of the batch rows `index` (beam search reorders and duplicates rows)."""
        hidden = None if self.hidden is None else tuple(t.index_select(1, index.to(t.device)) for t in self.hidden)
        pick = lambda t: None if t is None else t.index_select(0, index.to(t.device))  # noqa: E731
        return FusionLSTMState(hidden, pick(self.input_ids), pick(self.attention_mask), pick(self.context_input_ids),
                               pick(self.context_attention_mask))


@dataclass
class FusionLSTMOutput(ModelOutput):
    r"""
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, projection_size)`):
        The dense layer's output after fusion, at every position (the input of the output layer).
    fusion_embeds (`torch.FloatTensor` of shape `(batch_size, sequence_length, fusion_embedding_size)`, *optional*):
        e_j used at every position (given or computed by the encoder); None for `fusion="none"`.
    state (`FusionLSTMState`, *optional*, returned when `use_cache=True` outside training):
        Pass it back with the next tokens to continue the sequence without recomputing it.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
        Token embeddings (batch, seq_len, embedding_size), fused LSTM output (batch, seq_len, hidden or
        hidden + fusion width for concat) and last_hidden_state.
    """

    last_hidden_state: torch.FloatTensor | None = None
    fusion_embeds: torch.FloatTensor | None = None
    state: FusionLSTMState | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class FusionLSTMCausalLMOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `(1,)`, *optional*, returned when `labels` is provided):
        Next-token cross-entropy, mean over labels that are not -100.
    logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`):
        Next-token scores before softmax.
    fusion_embeds, state, hidden_states: as in `FusionLSTMOutput`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    fusion_embeds: torch.FloatTensor | None = None
    state: FusionLSTMState | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


# ----------------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------------


class FusionLSTMModel(FusionLSTMPreTrainedModel):
    """Token embedding → LSTM → fusion with e_j → dense (projection_size). The encoder, when the config has one,
    is a submodule saved with the model."""

    def __init__(self, config: FusionLSTMConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=None)
        self.dropout = nn.Dropout(config.dropout)
        # the LSTM and the fusion of e_j into it: one module per stage of the FUSIONS table
        self.recurrence = FUSION_STAGES[config.fusion_spec.stage](config)
        self.dense = nn.Linear(config.fused_size, config.projection_size)
        self.activation = self.recurrence.dense_activation()
        self.prefix_encoder = FusionLSTMPrefixEncoder(config) if config.uses_encoder else None
        # training state, not configuration: a schedule's current rate (None: config.fusion_dropout), never saved
        self.fusion_dropout_rate = None
        self.fusion_dropout_during_eval = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, new_embeddings):
        self.embeddings = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        fusion_embeds: torch.FloatTensor | None = None,
        state: FusionLSTMState | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        context_input_ids: torch.LongTensor | None = None,
        context_attention_mask: torch.LongTensor | None = None,
        **kwargs,
    ) -> tuple | FusionLSTMOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
            Token ids; with `state`, only the tokens that follow the state's sequence.
        attention_mask (`torch.LongTensor` of shape `(batch_size, sequence_length)` or, with `state`,
            `(batch_size, state_length + sequence_length)`): 1 for real tokens, 0 for padding (left or right).
            Padded positions never influence real ones.
        inputs_embeds (`torch.FloatTensor` of shape `(batch_size, sequence_length, embedding_size)`, *optional*):
            Token embeddings instead of `input_ids` (the encoder then needs `fusion_embeds`).
        fusion_embeds (`torch.FloatTensor` of shape `(batch_size, sequence_length, fusion_embedding_size)`, *optional*):
            e_j summarises tokens 0..j (precomputed prefix embeddings, or any external vector); computed by the
            encoder when absent.
        state (`FusionLSTMState`, *optional*): returned by a previous call with `use_cache=True`; the model
            continues from it.
        context_input_ids (`torch.LongTensor` of shape `(batch_size, context_len)`, *optional*): for a model
            trained with the document's previous sentences (`config.context_sentences`): those sentences, each
            followed by EOS, without BOS (padded like `attention_mask`, by `context_attention_mask`). They are
            conditioned on, never scored, and take no position of the output: the encoder reads them (fusion_context
            `previous`, `document`, `prefix+previous`) and, with `config.context_as_tokens`, the LSTM reads them
            after BOS, before the sentence. With a state: pass the same context at every step.
        context_attention_mask (`torch.LongTensor` of shape `(batch_size, context_len)`, *optional*): 1 for the
            context's real tokens, 0 for padding; all ones when absent.
        """
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        use_cache = use_cache and not self.training
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        # 1. Token embeddings of the new tokens, and the whole sequence so far (the state's history joined in)
        check_keywords(kwargs, self.forward, "FusionLSTMModel.forward")
        inputs = sequence_so_far(self, input_ids, attention_mask, inputs_embeds, state, context_input_ids,
                                       context_attention_mask)
        # 2. e_j of every new position: given, or from the prefix encoder
        fusion_embeds = self._fusion_embeds(fusion_embeds, inputs)
        # 3. The LSTM and the fusion of e_j, as the strategy's stage does it: h_j combined with e_j (late), the LSTM
        #    restarted from e_j at every position (early), or e_j alone (embedding_only); then the dense layer
        token_embeds = self.dropout(inputs.embeds)
        fused, hidden = self.recurrence(token_embeds, inputs, fusion_embeds, state, use_cache, self._embed_tokens)
        last_hidden_state = self.activation(self.dense(fused))

        output = FusionLSTMOutput(
            last_hidden_state=last_hidden_state,
            fusion_embeds=fusion_embeds,
            state=self._next_state(inputs, hidden) if use_cache else None,
            hidden_states=(token_embeds, fused, last_hidden_state) if output_hidden_states else None,
        )
        return output if return_dict else output.to_tuple()

    def _embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.embeddings(input_ids))

    def _next_state(self, inputs: SequenceSoFar, hidden) -> FusionLSTMState:
        # the encoder's next e_j and early fusion's next run both read the whole prefix
        keep_sequence = self.recurrence.keeps_sequence or self.prefix_encoder is not None
        return FusionLSTMState(
            hidden=hidden,
            input_ids=inputs.input_ids if keep_sequence else None,
            attention_mask=inputs.attention_mask if keep_sequence else None,
            context_input_ids=inputs.context_input_ids,
            context_attention_mask=inputs.context_attention_mask,
        )

    def _fusion_embeds(self, fusion_embeds, inputs: SequenceSoFar):
        """e_j (batch, num_new, F) in the model's dtype, given or computed; in training, dropped with probability
        fusion_dropout (whole vectors or elements, per fusion_dropout_mode). None for fusion='none'."""
        if not self.config.uses_fusion:
            if fusion_embeds is not None:
                raise ValueError("fusion='none' uses no prefix embeddings: do not pass fusion_embeds to this model.")
            return None
        batch, num_new = inputs.new_mask.shape
        if fusion_embeds is not None and not isinstance(fusion_embeds, torch.Tensor):
            raise TypeError(f"fusion_embeds must be a torch.Tensor of shape (batch, seq_len, fusion_embedding_size), got "
                            f"a {type(fusion_embeds).__name__}.")
        if fusion_embeds is not None:
            expected = (batch, num_new, self.config.fusion_embedding_size)
            if fusion_embeds.dim() != 3 or tuple(fusion_embeds.shape) != expected:
                raise ValueError(
                    f"fusion_embeds must have shape (batch, seq_len, fusion_embedding_size) = {expected}, "
                    f"got {tuple(fusion_embeds.shape)}."
                )
        elif self.prefix_encoder is None:
            raise ValueError(
                f"fusion={self.config.fusion!r} needs prefix embeddings, but this model has no encoder: pass "
                "`fusion_embeds` (batch, seq_len, fusion_embedding_size) to forward, or build the model with "
                "FusionLSTMForCausalLM.from_encoder_pretrained(encoder_path)."
            )
        elif inputs.input_ids is None:
            raise ValueError("The encoder reads token ids: pass input_ids (or fusion_embeds with inputs_embeds).")
        else:
            fusion_embeds = self.prefix_encoder(inputs.input_ids, inputs.attention_mask, num_new,
                                                inputs.context_input_ids, inputs.context_attention_mask)
        fusion_embeds = fusion_embeds.to(self.dense.weight.dtype)
        rate = self.config.fusion_dropout if self.fusion_dropout_rate is None else self.fusion_dropout_rate
        if rate > 0 and (self.training or self.fusion_dropout_during_eval):
            if self.config.fusion_dropout_mode == "element":
                # the paper's code: elements dropped, the rest rescaled by 1 / (1 - rate)
                return nn.functional.dropout(fusion_embeds, rate, training=True)
            # whole vectors, not rescaled: the LM must also work from the tokens alone
            keep = torch.rand(batch, num_new, 1, device=fusion_embeds.device) >= rate
            fusion_embeds = fusion_embeds * keep.to(fusion_embeds.dtype)
        return fusion_embeds


class FusionLSTMForCausalLM(FusionLSTMPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embeddings.weight"}

    def __init__(self, config: FusionLSTMConfig):
        super().__init__(config)
        self.model = FusionLSTMModel(config)
        self.lm_head = nn.Linear(config.projection_size, config.vocab_size)
        self.post_init()

    @property
    def prefix_encoder(self) -> FusionLSTMPrefixEncoder | None:
        """The encoder of prefixes (None without fusion or without an encoder), as on FusionLSTMModel."""
        return self.model.prefix_encoder

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    @classmethod
    def from_encoder_pretrained(cls, encoder_name_or_path=None, **kwargs) -> "FusionLSTMForCausalLM":
        """A fresh LSTM LM around a pretrained encoder; keyword arguments set config fields.

        The LM's vocabulary is the encoder tokenizer's: [CLS] acts as BOS, [SEP] as EOS, [PAD] pads.
        `encoder_name_or_path` defaults to the embedded MiniLM (all-MiniLM-L6-v2); any AutoModel encoder
        directory or Hub id works the same way.
        """
        from .tokenization_fusion_lstm import default_encoder_path, load_tokenizer

        encoder_name_or_path = str(encoder_name_or_path or default_encoder_path())
        tokenizer = load_tokenizer(encoder_name_or_path)
        encoder = AutoModel.from_pretrained(encoder_name_or_path)
        config_kwargs = {
            "vocab_size": len(tokenizer),
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            **kwargs,
        }
        config = FusionLSTMConfig(**config_kwargs)
        if config.uses_fusion:
            config = FusionLSTMConfig(**config_kwargs, encoder=encoder.config)
        model = cls(config)
        if model.prefix_encoder is not None:
            # loading into the existing parameters keeps their freeze
            model.prefix_encoder.encoder.load_state_dict(encoder.state_dict())
        return model

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        fusion_embeds: torch.FloatTensor | None = None,
        state: FusionLSTMState | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        token_type_ids: torch.LongTensor | None = None,
        context_input_ids: torch.LongTensor | None = None,
        context_attention_mask: torch.LongTensor | None = None,
        **kwargs,
    ) -> tuple | FusionLSTMCausalLMOutput:
        r"""
        Arguments as in `FusionLSTMModel.forward`, plus:
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Usually the input ids: the shift happens inside; -100 is ignored.
        logits_to_keep (`int` or `torch.Tensor`): compute logits only for the last `logits_to_keep` positions
            (0: all), as `generate` does.
        token_type_ids: accepted and ignored, so that a BERT tokenizer's output can be passed as is.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        check_keywords(kwargs, self.forward, "FusionLSTMForCausalLM.forward")
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            fusion_embeds=fusion_embeds,
            state=state,
            context_input_ids=context_input_ids,
            context_attention_mask=context_attention_mask,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        output = FusionLSTMCausalLMOutput(
            loss=loss,
            logits=logits,
            fusion_embeds=outputs.fusion_embeds,
            state=outputs.state,
            hidden_states=outputs.hidden_states,
        )
        return output if return_dict else output.to_tuple()

    def generate(self, *args, encoder_tokenizer=None, **kwargs):
        """transformers' generate(). A model whose vocabulary its encoder cannot read (a trained BPE) embeds each new
        prefix from its text: pass `tokenizer` (the model's) and `encoder_tokenizer` (the encoder's)."""
        refuse_context_length(kwargs)
        if self.config.uses_fusion and self.prefix_encoder is None:
            raise ValueError(
                f"generate() needs e_j of every new token, and this model (fusion={self.config.fusion!r}) has no encoder "
                "to compute them: build it with FusionLSTMForCausalLM.from_encoder_pretrained(encoder_path), or decode "
                "step by step, calling the model with `fusion_embeds` for each new position and `state`."
            )
        if self.config.encoder_reads_text:
            kwargs["text_prefixes"] = TextPrefixes(self.prefix_encoder, kwargs.get("tokenizer"), encoder_tokenizer)
        elif encoder_tokenizer is not None:
            raise ValueError("encoder_tokenizer is for a model whose vocabulary is not its encoder's; this model's "
                             "encoder reads its token ids: drop encoder_tokenizer.")
        return super().generate(*args, **kwargs)

    def prepare_inputs_for_generation(self, input_ids, text_prefixes: TextPrefixes | None = None, tokenizer=None,
                                      **kwargs):
        # generate() hands its `tokenizer` (for stop strings) down with the model's inputs; forward takes no tokenizer
        inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        if text_prefixes is not None:  # e_j of the new positions, from their text
            inputs["fusion_embeds"] = text_prefixes(input_ids, kwargs.get("attention_mask"),
                                                    inputs["input_ids"].shape[1])
        return inputs

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, is_encoder_decoder=False, num_new_tokens=1):
        # non-standard cache name, carried like RWKV's
        if "state" in outputs:
            model_kwargs["state"] = outputs.state
        return super()._update_model_kwargs_for_generation(outputs, model_kwargs, is_encoder_decoder, num_new_tokens)

    def _reorder_cache(self, state: FusionLSTMState, beam_idx: torch.Tensor) -> FusionLSTMState:
        return state.index_select(beam_idx)


__all__ = ["FusionLSTMForCausalLM", "FusionLSTMModel", "FusionLSTMPreTrainedModel", "FusionLSTMState", "EncoderWindow"]
