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


@pytest.fixture(scope="module")
def bpe_model(encoder_path):
    """A tiny concat model with a trained byte-level BPE of its own, around the real MiniLM: its encoder cannot read
    the LM's ids, so every e_j comes from the text of its prefix."""
    from transformers import AutoTokenizer

    from fusion_lstm_training.bpe import build_bpe_tokenizer
    from helpers import TINY
    from modeling_fusion_lstm import FusionLSTMForCausalLM

    bpe = build_bpe_tokenizer(SENTENCES * 20 + PROMPTS * 5, vocab_size=300)
    torch.manual_seed(0)
    model = FusionLSTMForCausalLM.from_encoder_pretrained(
        fusion="concat", vocab_size=len(bpe), bos_token_id=bpe.bos_token_id, eos_token_id=bpe.eos_token_id,
        pad_token_id=bpe.pad_token_id, **TINY).eval()
    return model, bpe, AutoTokenizer.from_pretrained(encoder_path)


def test_a_model_with_its_own_bpe_generates_embedding_each_prefix_from_its_text_as_training_did(bpe_model):
    """generate() with tokenizer and encoder_tokenizer: the e_j of a sentence's prefixes are what training stored for
    it (PrefixEmbedder's text path, a character split into byte tokens included); cached greedy decoding equals
    uncached and full forward passes fed those e_j; a left-padded batch generates what each prompt does alone."""
    from datasets import Dataset

    from fusion_lstm_data.embedder import PrefixEmbedder
    from fusion_lstm_training.data import tokenize_sentences
    from modeling_fusion_lstm.prefix_encoder_fusion_lstm import TextPrefixes

    model, bpe, encoder_tokenizer = bpe_model
    text_prefixes = TextPrefixes(model.prefix_encoder, bpe, encoder_tokenizer)
    sentence = "The caf\u00e9 cat sat."
    data = tokenize_sentences(Dataset.from_dict({"text": [sentence]}), bpe, 64, "train", keep_offsets=True)
    stored = PrefixEmbedder(model.prefix_encoder, bpe, encoder_tokenizer)(
        {"text": [data[0]["text"]], "offsets": [data[0]["offsets"]]})["fusion_embeds"][0]
    ids = torch.tensor([data[0]["input_ids"]])
    with torch.no_grad():
        computed = text_prefixes(ids, None, ids.shape[1])[0]
    torch.testing.assert_close(computed, torch.from_numpy(stored).float(), atol=2e-3, rtol=0)  # stored in float16
    assert "\u00c3" in bpe.convert_ids_to_tokens(ids[0].tolist())  # é's first byte: a token of its own

    kwargs = {"tokenizer": bpe, "encoder_tokenizer": encoder_tokenizer}
    inputs = bpe([PROMPTS[1]], return_tensors="pt")
    cached = generate(model, inputs, **kwargs)
    assert torch.equal(cached, generate(model, inputs, use_cache=False, **kwargs))
    full = inputs["input_ids"]
    with torch.no_grad():
        for _ in range(8):
            logits = model(input_ids=full, fusion_embeds=text_prefixes(full, None, full.shape[1]), use_cache=False).logits
            full = torch.cat([full, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(cached, full)
    bpe.padding_side = "left"
    batch = bpe(PROMPTS, return_tensors="pt", padding=True)
    together = generate(model, batch, **kwargs)
    for row, prompt in zip(together, PROMPTS):
        alone = generate(model, bpe([prompt], return_tensors="pt"), **kwargs)[0]
        assert torch.equal(row[-8:], alone[-8:])


def test_generation_that_needs_the_text_of_each_prefix_says_what_to_pass(bpe_model, make_model, tokenizer):
    model, bpe, encoder_tokenizer = bpe_model
    inputs = bpe([PROMPTS[0]], return_tensors="pt")
    with pytest.raises(ValueError, match="pass tokenizer=<the model's tokenizer> and encoder_tokenizer="):
        generate(model, inputs)
    with pytest.raises(ValueError, match="pass tokenizer=.* and encoder_tokenizer="):
        generate(model, inputs, tokenizer=bpe)
    with pytest.raises(ValueError, match="this model's encoder reads its token ids: drop encoder_tokenizer"):
        generate(make_model("concat"), tokenizer([PROMPTS[0]], return_tensors="pt"), encoder_tokenizer=tokenizer)


def test_the_run_shows_a_sampled_continuation_of_a_saved_model_with_its_own_bpe(bpe_model, encoder_path, tmp_path,
                                                                               capsys):
    """run_clm's --generation_prompt: the saved folder reloaded with AutoModelForCausalLM continues the prompt, the
    encoder's tokenizer found for a model whose prefixes are embedded from text; the same seed, the same text."""
    from fusion_lstm_training.clm import show_generation

    model, bpe, _ = bpe_model
    model.save_pretrained(tmp_path / "model")
    bpe.save_pretrained(tmp_path / "model")
    shown = []
    for _ in range(2):
        show_generation(str(tmp_path / "model"), "The cat", encoder_path)
        shown.append(capsys.readouterr().out)
    assert shown[0] == shown[1] and "generated (do_sample True" in shown[0]
    continuation = shown[0].split("seed 0): ", 1)[1].strip()
    assert continuation.startswith("The cat") and len(continuation) > len("The cat")
