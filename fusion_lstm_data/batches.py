"""Batches as every part of the project builds them: token ids padded on the right, the characters that tokens so far
determine (`known_ends`), and the collator of sentences with their e_j and the document's context."""

from dataclasses import dataclass

import torch


def known_ends(offsets) -> list[int]:
    """For each token's (start, end) characters, where the text that tokens up to it determine ends: its end, or,
    where the next token starts before that end (a byte-level BPE splits a rare character into several byte tokens,
    each given the whole character), where the next token starts: a window cut there never holds a character whose
    last byte comes later (the text path's prefixes, EncoderWindow.texts)."""
    offsets = [tuple(o) for o in offsets]
    return [min(end, offsets[k + 1][0]) if k + 1 < len(offsets) else end for k, (_, end) in enumerate(offsets)]


def pad_right(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists → (ids, attention_mask), both (len(sequences), longest), padded on the right."""
    lengths = [len(seq) for seq in sequences]
    ids = torch.full((len(sequences), max(lengths, default=0)), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, seq in enumerate(sequences):
        ids[i, : lengths[i]] = torch.as_tensor(seq)
        mask[i, : lengths[i]] = 1
    return ids, mask


@dataclass
class FusionDataCollator:
    """Pads a batch on the right: input_ids with the pad id, attention_mask with 0, labels with -100, and
    fusion_embeds (float16 in the cache) with zeros, as float32. Labels are the input ids, or the features' own
    `labels` where they have them. The document's previous sentences, `context_input_ids`, are padded the same way
    into context_input_ids and context_attention_mask."""

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = pad_right([f["input_ids"] for f in features], self.pad_token_id)
        batch, length = input_ids.shape
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        if "labels" in features[0]:
            labels, _ = pad_right([f["labels"] for f in features], -100)
        out = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if "context_input_ids" in features[0]:
            out["context_input_ids"], out["context_attention_mask"] = pad_right(
                [f["context_input_ids"] for f in features], self.pad_token_id)
        if "fusion_embeds" in features[0]:
            width = len(features[0]["fusion_embeds"][0])
            fusion_embeds = torch.zeros(batch, length, width)
            for i, f in enumerate(features):
                vectors = torch.as_tensor(f["fusion_embeds"], dtype=torch.float32)
                fusion_embeds[i, : len(vectors)] = vectors
            out["fusion_embeds"] = fusion_embeds
        return out
