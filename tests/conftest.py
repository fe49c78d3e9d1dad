"""Fixtures: the real MiniLM encoder's tokenizer, tiny models and a padded batch (constants in helpers.py)."""

import pytest

import modeling_fusion_lstm
from helpers import SENTENCES, tiny_model


@pytest.fixture(scope="session")
def encoder_path():
    return modeling_fusion_lstm.default_encoder_path()


@pytest.fixture(scope="session")
def tokenizer(encoder_path):
    return modeling_fusion_lstm.load_tokenizer(encoder_path)


@pytest.fixture
def make_model():
    return tiny_model


@pytest.fixture
def batch(tokenizer):
    return tokenizer(SENTENCES, return_tensors="pt", padding=True)
