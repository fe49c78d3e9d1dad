"""generate(): the cached recurrent state gives exactly what full forward passes give."""

import pytest
import torch
from transformers import pipeline

from helpers import SENTENCES


PROMPTS = ["The cat", "Fusion lowers the perplexity of", "In 1990 the city"]
FUSIONS = ["none", "concat", "init_hc"]


def greedy_by_full_forward(model, ids, steps):
    """Reference decoding: one full forward over the whole sequence per new token, argmax of the last logits."""
    with torch.no_grad():
        for _ in range(steps):
            next_id = model(input_ids=ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, next_id], dim=1)
    return ids


def generate(model, inputs, **kwargs):
    kwargs = {"max_new_tokens": 8, "do_sample": False, "eos_token_id": None, **kwargs}
    with torch.no_grad():
        return model.generate(**inputs, **kwargs)


@pytest.mark.parametrize("fusion", FUSIONS + ["multiply", "init_c"])
def test_cached_greedy_equals_greedy_by_full_forward_passes(make_model, tokenizer, fusion):
    model = make_model(fusion)
    inputs = tokenizer([PROMPTS[1]], return_tensors="pt")
    cached = generate(model, inputs)
    assert torch.equal(cached, generate(model, inputs, use_cache=False))
    assert torch.equal(cached, greedy_by_full_forward(model, inputs["input_ids"], 8))


@pytest.mark.parametrize("fusion", ["concat", "init_hc"])
def test_sentence_context_generates_the_same_with_and_without_the_state(make_model, tokenizer, fusion):
    # at the newest position the whole sentence is the prefix, so the leaky probe decodes like a prefix model
    model = make_model(fusion, fusion_context="sentence")
    inputs = tokenizer([PROMPTS[2]], return_tensors="pt")
    assert torch.equal(generate(model, inputs), greedy_by_full_forward(model, inputs["input_ids"], 8))


def test_state_skips_recomputing_the_lstm_for_late_fusion(make_model, tokenizer):
    model = make_model("concat")
    ids = tokenizer([PROMPTS[1]], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        full = model(input_ids=ids).logits
        first = model(input_ids=ids[:, :-2], use_cache=True)
        rest = model(input_ids=ids[:, -2:], state=first.state, use_cache=True)
    assert first.state.hidden is not None  # the LSTM continues from (h, c)
    torch.testing.assert_close(torch.cat([first.logits, rest.logits], dim=1), full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fusion", FUSIONS + ["init_h"])
def test_cached_beam_search_equals_uncached(make_model, tokenizer, fusion):
    model = make_model(fusion)
    inputs = tokenizer(PROMPTS[:2], return_tensors="pt", padding=True, padding_side="left")
    kwargs = {"num_beams": 3, "num_return_sequences": 2}
    assert torch.equal(generate(model, inputs, **kwargs), generate(model, inputs, use_cache=False, **kwargs))


@pytest.mark.parametrize("fusion", ["none", "add"])
def test_cached_sampling_equals_uncached_with_the_same_seed(make_model, tokenizer, fusion):
    model = make_model(fusion)
    inputs = tokenizer(PROMPTS[:1], return_tensors="pt")
    outputs = []
    for use_cache in (True, False):
        torch.manual_seed(7)
        outputs.append(generate(model, inputs, do_sample=True, top_k=20, use_cache=use_cache))
    assert torch.equal(*outputs)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_left_padded_batch_generates_what_each_prompt_generates_alone(make_model, tokenizer, fusion):
    model = make_model(fusion)
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    together = generate(model, batch, pad_token_id=tokenizer.pad_token_id)
    width = batch["input_ids"].shape[1]
    for i, prompt in enumerate(PROMPTS):
        alone = generate(model, tokenizer([prompt], return_tensors="pt"))
        assert torch.equal(together[i, width:], alone[0, alone.shape[1] - 8 :]), prompt


def test_generate_accepts_tokenizer_output_as_is(make_model, tokenizer, encoder_path):
    from transformers import AutoTokenizer

    model = make_model("concat")
    for tok in (tokenizer, AutoTokenizer.from_pretrained(encoder_path)):  # the raw BERT one adds token_type_ids
        inputs = tok(SENTENCES[:1], return_tensors="pt")
        assert generate(model, inputs).shape[1] == inputs["input_ids"].shape[1] + 8


def test_generation_stops_at_eos(make_model, tokenizer):
    model = make_model("none")
    inputs = tokenizer([PROMPTS[0]], return_tensors="pt")
    first = generate(model, inputs, max_new_tokens=1)[0, -1].item()
    out = generate(model, inputs, eos_token_id=first, max_new_tokens=5)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 1


def test_pipeline_prompts_start_with_bos_as_in_training(tmp_path, make_model, tokenizer):
    model = make_model("concat")
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    generator = pipeline("text-generation", model=str(tmp_path), trust_remote_code=True)
    # the pipeline tokenizes with the tokenizer's defaults, and the LM tokenizer's default adds BOS exactly once
    prompt_ids = generator.preprocess(PROMPTS[0], **generator._preprocess_params)["input_ids"][0].tolist()
    assert prompt_ids == tokenizer(PROMPTS[0])["input_ids"] and prompt_ids.count(tokenizer.bos_token_id) == 1
    got = generator(PROMPTS[0], max_new_tokens=6, do_sample=False, return_full_text=False)[0]["generated_text"]
    expected_ids = generate(model, tokenizer([PROMPTS[0]], return_tensors="pt"), max_new_tokens=6)
    prompt_len = len(tokenizer(PROMPTS[0])["input_ids"])
    assert got == tokenizer.decode(expected_ids[0, prompt_len:], skip_special_tokens=True)
