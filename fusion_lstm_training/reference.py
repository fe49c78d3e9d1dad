"""Slow references written from the paper's description, one prefix at a time: what the fast paths are tested
against (tests/) and measured against (bench/). They spell out every strategy by name on purpose, independently of
the FUSIONS table and FUSION_FUNCTIONS, so that a mistake there cannot hide in both."""

import torch


def naive_prefix_embedding(model, ids: torch.Tensor, j: int) -> torch.Tensor:
    """e_j (width,) by one encoder call on [tokens 0..j] + [SEP] of the unpadded sequence `ids` (seq_len,), pooled
    as the model's config says."""
    row = torch.cat([ids[: j + 1], torch.tensor([model.config.eos_token_id])]).unsqueeze(0)
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
        e = naive_prefix_embedding(model, ids, j) if config.fusion != "none" else None
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
