"""Slow references written from the paper's description, one prefix at a time: what the fast paths are tested
against (tests/) and measured against (bench/). They spell out every strategy by name on purpose, independently of
the FUSIONS table and FUSION_FUNCTIONS, so that a mistake there cannot hide in both."""

import torch


def naive_context(config, ids: torch.Tensor, j: int, context_ids: torch.Tensor | None = None,
                  mode: str | None = None) -> torch.Tensor:
    """The tokens whose embedding is e_j, per `mode` (default config.fusion_context), for the sentence `ids` (BOS
    first) after the document's previous sentences `context_ids` (each ending in EOS; no BOS): tokens 0..j (prefix);
    0..min(j, c) (subr); the first token ([CLS]) then c..j (subl), with c = int(k · |S|), |S| = len(ids); [CLS]
    and the previous sentences (previous); [CLS], the previous sentences and the sentence's tokens 1..j
    (document)."""
    mode = mode or config.fusion_context
    context = ids[:0] if context_ids is None else context_ids
    if mode == "previous":
        return torch.cat([ids[:1], context])
    if mode == "document":
        return torch.cat([ids[:1], context, ids[1 : j + 1]])
    c = int(config.fusion_context_fraction * len(ids))
    if mode == "subr":
        return ids[: min(j, c) + 1]
    if mode == "subl":
        return torch.cat([ids[:1], ids[max(c, 1) : j + 1]])
    return ids[: j + 1]


def naive_prefix_embedding(model, ids: torch.Tensor, j: int, context_ids: torch.Tensor | None = None) -> torch.Tensor:
    """e_j (width,) by one encoder call on the context of position j (tokens 0..j for fusion_context='prefix') +
    [SEP] of the unpadded sequence `ids` (seq_len,), pooled as the model's config says; for 'prefix+previous', one
    call for each, the two vectors one after the other."""
    vectors = []
    for mode in model.config.fusion_context.split("+"):
        window = naive_context(model.config, ids, j, context_ids, mode)
        row = torch.cat([window, torch.tensor([model.config.eos_token_id])]).unsqueeze(0)
        out = model.prefix_encoder.encoder(input_ids=row, attention_mask=torch.ones_like(row))
        pooling = model.config.encoder_pooling
        if pooling == "cls":
            vectors.append(out.last_hidden_state[0, 0])
        elif pooling == "last":
            vectors.append(out.last_hidden_state[0, -1])
        elif pooling == "mean":
            vectors.append(out.last_hidden_state[0].mean(0))
        else:
            vectors.append(out.pooler_output[0])
    return torch.cat(vectors)


def naive_prefix_embeddings(model, sentences: list[list[int]]) -> list[torch.Tensor]:
    """(len, width) per sentence of token ids: one encoder call per prefix."""
    return [torch.stack([naive_prefix_embedding(model, torch.tensor(ids), j) for j in range(len(ids))])
            for ids in sentences]


def naive_logits(model, ids: torch.Tensor, context_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Logits (seq_len, vocab) of one unpadded sentence `ids` (seq_len,), one position at a time: e_j from its own
    encoder call, the LSTM run from scratch over tokens 0..j (from e_j for early fusion), then fusion, dense and the
    output layer. With the document's previous sentences `context_ids`, an LSTM that reads them after BOS, before
    the sentence, where it reads the context as tokens."""
    m, config = model.model, model.config
    lstm, projection = m.recurrence.lstm, m.recurrence.fusion_projection
    project = projection if projection is not None else (lambda e: e)
    read = ids
    if context_ids is not None and config.context_as_tokens:  # the LSTM reads BOS, the context, then the sentence
        read = torch.cat([ids[:1], context_ids, ids[1:]])
    offset = len(read) - len(ids)
    embeds = m.embeddings(read).unsqueeze(0)
    outputs = []
    for j in range(len(ids)):
        e = naive_prefix_embedding(model, ids, j, context_ids) if config.uses_fusion else None
        if config.fusion == "embedding_only":
            # the artefact-only MLP: e_j → ReLU → ReLU → output layer, no LSTM
            hidden = torch.relu(m.dense(torch.relu(projection(e))))
            outputs.append(model.lm_head(hidden))
            continue
        if config.fusion in ("init_h", "init_c", "init_hc"):
            state = project(e).expand(config.num_hidden_layers, 1, -1).contiguous()
            zeros = torch.zeros_like(state)
            h0 = state if config.fusion in ("init_h", "init_hc") else zeros
            c0 = state if config.fusion in ("init_c", "init_hc") else zeros
            h = lstm(embeds[:, : j + 1 + offset], (h0, c0))[0][0, -1]
        else:
            h = lstm(embeds[:, : j + 1 + offset])[0][0, -1]
        fused = {
            "concat": lambda: torch.cat([h, e]),
            "add": lambda: h + project(e),
            "multiply": lambda: h * project(e),
        }.get(config.fusion, lambda: h)()
        outputs.append(model.lm_head(m.dense(fused)))
    return torch.stack(outputs)
