"""A saved folder loads where the package is not installed: trust_remote_code, in a fresh subprocess."""

import json

import pytest
import torch
from transformers import AutoTokenizer

from helpers import SENTENCES, load_without_package


@pytest.mark.parametrize("fusion", ["concat", "init_hc"])
def test_saved_folder_loads_with_trust_remote_code_without_the_package(tmp_path, make_model, tokenizer, fusion):
    model = make_model(fusion)
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_fusion_lstm.FusionLSTMForCausalLM"
    assert config["auto_map"]["AutoModel"] == "modeling_fusion_lstm.FusionLSTMModel"
    # the model's code travels with it, the prefix encoder's module beside the model's
    assert {"configuration_fusion_lstm.py", "modeling_fusion_lstm.py", "prefix_encoder_fusion_lstm.py",
            "inputs_fusion_lstm.py"} <= {
        p.name for p in folder.glob("*.py")}

    inputs = dict(tokenizer(SENTENCES, return_tensors="pt", padding=True))
    outputs, report = load_without_package(folder, inputs, tmp_path)

    assert report["class"].startswith("transformers_modules.") and report["frozen"]
    mask = inputs["attention_mask"].bool()
    with torch.no_grad():
        expected = model(**inputs).logits
        expected_generated = model.generate(
            **tokenizer(["The cat"], return_tensors="pt"), max_new_tokens=5, do_sample=False
        )
    torch.testing.assert_close(outputs["logits"][mask], expected[mask], rtol=0, atol=1e-6)
    assert torch.equal(outputs["generated"], expected_generated)


def test_saved_tokenizer_behaves_like_the_lm_tokenizer(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for tok in (tokenizer, loaded):
        ids = tok("The cat sat.")["input_ids"]
        assert ids[0] == tok.bos_token_id == tok.cls_token_id and ids[-1] != tok.eos_token_id
        assert ids.count(tok.bos_token_id) == 1 and tok.eos_token_id not in ids
        assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("[CLS]", "[SEP]", "[PAD]")
    assert loaded("The cat sat.")["input_ids"] == tokenizer("The cat sat.")["input_ids"]
    long_text = " ".join(["word"] * 300)
    assert len(loaded(long_text)["input_ids"]) == 301, "the encoder's 128-token truncation must not carry over"
