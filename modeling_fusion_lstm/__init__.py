"""fusion-lstm: sentence-embedding fusion LSTM language models for Hugging Face transformers.

Importing the package registers model_type "fusion_lstm" with AutoConfig, AutoModel and AutoModelForCausalLM.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_fusion_lstm import BASELINE_FUSION, FUSIONS, PAPER_FUSION, FusionLSTMConfig, FusionSpec, FusionStage
from .modeling_fusion_lstm import (
    FUSION_FUNCTIONS,
    FusionLSTMForCausalLM,
    FusionLSTMModel,
    FusionLSTMPreTrainedModel,
    FusionLSTMState,
    EncoderWindow,
)
from .tokenization_fusion_lstm import default_encoder_path, load_tokenizer


AutoConfig.register(FusionLSTMConfig.model_type, FusionLSTMConfig, exist_ok=True)
AutoModel.register(FusionLSTMConfig, FusionLSTMModel, exist_ok=True)
AutoModelForCausalLM.register(FusionLSTMConfig, FusionLSTMForCausalLM, exist_ok=True)
# save_pretrained writes the code files and `auto_map`, so a saved folder loads with trust_remote_code=True
FusionLSTMConfig.register_for_auto_class()
FusionLSTMModel.register_for_auto_class("AutoModel")
FusionLSTMForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = [
    "BASELINE_FUSION",
    "FUSIONS",
    "FUSION_FUNCTIONS",
    "PAPER_FUSION",
    "FusionLSTMConfig",
    "FusionLSTMForCausalLM",
    "FusionLSTMModel",
    "FusionLSTMPreTrainedModel",
    "FusionLSTMState",
    "FusionSpec",
    "FusionStage",
    "EncoderWindow",
    "default_encoder_path",
    "load_tokenizer",
]
