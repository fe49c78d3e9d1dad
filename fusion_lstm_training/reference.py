"""Slow references written from the paper's description, one prefix at a time: what the fast paths are tested
against (tests/) and measured against (bench/). They spell out every strategy by name on purpose, independently of
the FUSIONS table and FUSION_FUNCTIONS, so that a mistake there cannot hide in both."""

import torch


def naive_context(config, ids: torch.Tensor, j: int) -> torch.Tensor:
    """The tokens whose embedding is e_j, per config.fusion_context: tokens 0..j (prefix); 0..min(j, c) (subr);
    the first token ([CLS]) then c..j (subl), with c = int(k · |S|), |S| = len(ids)."""
    c = int(config.fusion_context_fraction * len(ids))
    if config.fusion_context == "subr":
        return ids[: min(j, c) + 1]
    if config.fusion_context == "subl":
        return torch.cat([ids[:1], ids[max(c, 1) : j + 1]])
    return ids[: j + 1]


def naive_prefix_embedding(model, ids: torch.Tensor, j: int) -> torch.Tensor:
    """e_j (width,) by one encoder call on the context of position j (tokens 0..j for fusion_context='prefix') +
    [SEP] of the unpadded sequence `ids` (seq_len,), pooled as the model's config says."""
    row = torch.cat([naive_context(model.config, ids, j), torch.tensor([model.config.eos_token_id])]).unsqueeze(0)
    out = model.prefix_encoder.encoder(input_ids=row, attention_mask=torch.ones_like(row))
    pooling = model.config.encoder_pooling
    if pooling == "cls":
        return out.last_hidden_state[0, 0]
    if pooling == "mean":
        return out.last_hidden_state[0].mean(0)
    return out.pooler_output[0]


def naive_prefix_embeddings(model, sentences: list[list[int]]) -> list[torch.Tensor]:
    """(len, width) per sentence of token ids: one encoder call per prefix."""
    return [torch.stack([naive_prefix_embedding(model, torch.tensor(ids), j) for j in range(len(ids))])
            for ids in sentences]


def naive_logits(model, ids: torch.Tensor) -> torch.Tensor:
    """Logits (seq_len, vocab) of one unpadded sequence `ids` (seq_len,), one position at a time: e_j from its own
    encoder call, the LSTM run from scratch over tokens 0..j (from e_j for early fusion), then fusion, dense and
    the output layer."""
    m, config = model.model, model.config
    lstm, projection = m.recurrence.lstm, m.recurrence.fusion_projection
    project = projection if projection is not None else (lambda e: e)
    embeds = m.embeddings(ids).unsqueeze(0)
    outputs = []
    for j in range(len(ids)):
        e = naive_prefix_embedding(model, ids, j) if config.uses_fusion else None
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
            h = lstm(embeds[:, : j + 1], (h0, c0))[0][0, -1]
        else:
            h = lstm(embeds[:, : j + 1])[0][0, -1]
        fused = {
            "concat": lambda: torch.cat([h, e]),
            "add": lambda: h + project(e),
            "multiply": lambda: h * project(e),
        }.get(config.fusion, lambda: h)()
        outputs.append(model.lm_head(m.dense(fused)))
    return torch.stack(outputs)
