"""A saved folder loads where the package is not installed: trust_remote_code, in a fresh subprocess."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from conftest import SENTENCES


# Runs in a subprocess whose import system refuses `modeling_fusion_lstm`, wherever it is installed.
LOADER = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class RefuseThePackage(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "modeling_fusion_lstm":
                raise ImportError("modeling_fusion_lstm is not installed here")
            return None

    sys.meta_path.insert(0, RefuseThePackage())
    try:
        import modeling_fusion_lstm
    except ImportError:
        pass
    else:
        raise SystemExit("the package is still importable")

    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, inputs_file, out_file = sys.argv[1:4]
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    inputs = load_file(inputs_file)
    with torch.no_grad():
        logits = model(**inputs).logits
        generated = model.generate(**tokenizer(["The cat"], return_tensors="pt"), max_new_tokens=5, do_sample=False)
    save_file({"logits": logits.contiguous(), "generated": generated}, out_file)
    print(json.dumps({"class": type(model).__module__, "frozen": not any(
        p.requires_grad for p in model.model.prefix_encoder.parameters())}))
    """
)


def load_without_package(folder, inputs, tmp_path):
    """Load `folder` in a subprocess that cannot import the package; returns its outputs and report."""
    inputs_file, out_file = tmp_path / "inputs.safetensors", tmp_path / "out.safetensors"
    save_file({k: v.contiguous() for k, v in inputs.items()}, inputs_file)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    result = subprocess.run(
        [sys.executable, "-c", LOADER, str(folder), str(inputs_file), str(out_file)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert report, result.stdout[-3000:]
    return load_file(out_file), json.loads(report[-1])


@pytest.mark.parametrize("fusion", ["concat", "init_hc"])
def test_saved_folder_loads_with_trust_remote_code_without_the_package(tmp_path, make_model, tokenizer, fusion):
    model = make_model(fusion)
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_fusion_lstm.FusionLSTMForCausalLM"
    assert config["auto_map"]["AutoModel"] == "modeling_fusion_lstm.FusionLSTMModel"

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
