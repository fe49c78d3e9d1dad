"""The inputs of one FusionLSTM forward call (`SequenceSoFar`): checked, each error naming the input and the fix, and
with a cached state's history joined to the new tokens. `model` below is the FusionLSTMModel reading them (its
config, its token embeddings). modeling_fusion_lstm.py's forward starts here."""

from typing import NamedTuple

import torch


def check_mask_values(mask: torch.Tensor, name: str):
    """A mask holds only 0 and 1 (or is boolean): lengths come from its sums."""
    if mask.dtype != torch.bool and bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError(f"{name} must hold only 0 and 1 (or be boolean), got the values "
                         f"{sorted(set(mask.unique().tolist()))[:5]}.")


# what transformers' Trainer and loss functions pass through a model's **kwargs
PASSED_THROUGH = ("num_items_in_batch", "ignore_index")


def check_keywords(kwargs: dict, function, where: str):
    """A keyword that no parameter of `function` (called `where`) takes (a misspelt `context_ids=`, `fusion_embed=`)
    is refused, with the closest parameter names: it would otherwise be ignored without a word. The signature is read
    only then: every forward call passes through here."""
    refuse_context_length(kwargs)
    unknown = [name for name in kwargs if name not in PASSED_THROUGH]
    if unknown:
        import difflib
        import inspect

        known = list(inspect.signature(function).parameters)
        close = list(dict.fromkeys(match for name in unknown  # the closest first
                                   for match in difflib.get_close_matches(name, known, n=2, cutoff=0.6)))
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise TypeError(f"{where}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}{hint}")


def refuse_context_length(kwargs: dict):
    """`context_length` (the document's previous sentences inside input_ids) was an input before the context got its
    own tensors: a caller that still sends it is told how to pass them."""
    if "context_length" in kwargs:
        raise ValueError("`context_length` is no longer an input: pass the document's previous sentences as their own "
                         "tensors, context_input_ids and context_attention_mask (batch, context_len), and input_ids as "
                         "BOS + the sentence alone (a row built before holds, after BOS, its n = context_length context "
                         "tokens: context_input_ids = ids[1 : 1 + n], input_ids = ids[:1] + ids[1 + n :]).")


class SequenceSoFar(NamedTuple):
    """The inputs of one forward call, with the state's history joined in.

    embeds (batch, num_new, E): embeddings of the new tokens (before dropout); new_mask (batch, num_new): their
    attention mask; input_ids, attention_mask (batch, history + num_new): the sentence so far (input_ids None when the
    model was given inputs_embeds and keeps no history); context_input_ids, context_attention_mask (batch,
    context_len): the document's previous sentences (None: none); context_as_tokens: whether the LSTM reads them
    before the sentence (context_as_tokens), not only the encoder."""

    embeds: torch.Tensor
    new_mask: torch.Tensor
    input_ids: torch.Tensor | None
    attention_mask: torch.Tensor
    context_input_ids: torch.Tensor | None = None
    context_attention_mask: torch.Tensor | None = None
    context_as_tokens: bool = False

    @property
    def has_history(self) -> bool:
        return self.attention_mask.shape[1] != self.new_mask.shape[1]


def check_input_ids(model, input_ids: torch.Tensor, name: str = "input_ids"):
    """Token ids of shape (batch, seq_len), each inside the model's vocabulary."""
    if input_ids.dim() != 2:
        raise ValueError(f"{name} must have shape (batch, seq_len), got {tuple(input_ids.shape)}.")
    if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= model.config.vocab_size):
        raise ValueError(
            f"{name} contain ids outside the vocabulary [0, {model.config.vocab_size}): min "
            f"{int(input_ids.min())}, max {int(input_ids.max())}. Use this model's tokenizer."
        )


def sequence_so_far(model, input_ids, attention_mask, inputs_embeds, state, context_input_ids,
                     context_attention_mask) -> SequenceSoFar:
    """Checks the inputs and joins the state's history (ids and mask) to the new tokens; adds the document's
    previous sentences, checked."""
    inputs = join_history(model, input_ids, attention_mask, inputs_embeds, state)
    if context_input_ids is None:
        if context_attention_mask is not None:
            raise ValueError("context_attention_mask was given without context_input_ids: pass both.")
        check_state_context(model, state, None, None)
        return inputs
    if not model.config.context_sentences:
        raise ValueError("context_input_ids were given to a model trained without the document's previous sentences "
                         f"(context_sentences=0, fusion_context={model.config.fusion_context!r}, context_as_tokens="
                         f"{model.config.context_as_tokens}): it would not read them. Drop context_input_ids, or use a "
                         "model trained with --context_sentences.")
    if context_input_ids.is_floating_point() or context_input_ids.dtype == torch.bool:
        raise TypeError(f"context_input_ids must hold token ids (an integer tensor), got {context_input_ids.dtype}.")
    batch = inputs.new_mask.shape[0]
    if context_input_ids.dim() != 2 or context_input_ids.shape[0] != batch:
        raise ValueError(f"context_input_ids must have shape (batch, context_len) with batch = {batch}, got "
                         f"{tuple(context_input_ids.shape)}.")
    check_input_ids(model, context_input_ids, "context_input_ids")
    if context_attention_mask is None:
        context_attention_mask = torch.ones_like(context_input_ids)
    if tuple(context_attention_mask.shape) != tuple(context_input_ids.shape):
        raise ValueError(f"context_attention_mask has shape {tuple(context_attention_mask.shape)}; it must match "
                         f"context_input_ids' {tuple(context_input_ids.shape)}.")
    check_mask_values(context_attention_mask, "context_attention_mask")
    context_attention_mask = context_attention_mask.to(torch.long)
    check_state_context(model, state, context_input_ids, context_attention_mask)
    return inputs._replace(context_input_ids=context_input_ids, context_attention_mask=context_attention_mask,
                           context_as_tokens=model.config.context_as_tokens)


def check_state_context(model, state, context_input_ids, context_attention_mask):
    """A state continues the sequence it was made for: with the document context it was made with, the same at every
    step (a model that reads none keeps none in its state). The context is the checked one (its mask given or all
    ones, as long), or None for none."""
    if state is None or not model.config.context_sentences:
        return
    kept, given = state.context_input_ids, context_input_ids
    same = (kept is None) == (given is None) and (kept is None or (
        kept.shape == given.shape and torch.equal(kept, given.to(kept.device))
        and torch.equal(state.context_attention_mask, context_attention_mask.to(kept.device))))
    if not same:
        raise ValueError("This state was made with "
                         f"{'no document context' if kept is None else 'another document context'} than the "
                         "context_input_ids given now: pass the same context_input_ids (and context_attention_mask) "
                         "at every step of a sequence, or start it again without a state.")


def join_history(model, input_ids, attention_mask, inputs_embeds, state) -> SequenceSoFar:
    """The new tokens' embeddings and mask, checked, after the state's ids and mask (where it keeps them)."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
    if input_ids is not None:
        check_input_ids(model, input_ids)
        inputs_embeds = model.embeddings(input_ids)
    batch, num_new = inputs_embeds.shape[:2]
    if batch == 0 or num_new == 0:
        raise ValueError(f"Got an empty batch of shape {tuple(inputs_embeds.shape[:2])}: pass at least one token.")
    if attention_mask is None:
        history = state.attention_mask.shape[1] if state is not None and state.attention_mask is not None else 0
        attention_mask = torch.ones(batch, history + num_new, dtype=torch.long, device=model.device)
    # prefix lengths come from the mask's running sum: any other value would let positions see the future
    check_mask_values(attention_mask, "attention_mask")
    attention_mask = attention_mask.to(torch.long)
    if attention_mask.shape[0] != batch or attention_mask.shape[1] < num_new:
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}; expected ({batch}, {num_new}) or, with a "
            f"state, ({batch}, history + {num_new})."
        )
    new_mask = attention_mask[:, -num_new:]
    if state is None:
        if attention_mask.shape[1] != num_new:
            raise ValueError(
                f"attention_mask has {attention_mask.shape[1]} columns for {num_new} tokens; without a state "
                "they must match."
            )
        empty = (new_mask.sum(1) == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"Sequences {empty} of the batch are empty (attention_mask all zeros).")
    if state is None or state.input_ids is None:
        return SequenceSoFar(inputs_embeds, new_mask, input_ids, new_mask)
    if input_ids is None:
        raise ValueError("Continuing from a state that keeps the sequence needs input_ids, not inputs_embeds.")
    full_ids = torch.cat([state.input_ids, input_ids], dim=1)
    return SequenceSoFar(inputs_embeds, new_mask, full_ids, torch.cat([state.attention_mask, new_mask], dim=1))
