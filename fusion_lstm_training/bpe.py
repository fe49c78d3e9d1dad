"""A BPE tokenizer trained on the training text, as the paper's 8192-token BPE (then the LM vocabulary differs
from the encoder's, and prefix embeddings come from the text of each prefix)."""

import logging
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast


logger = logging.getLogger(__name__)
SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "bos_token": "[BOS]", "eos_token": "[EOS]"}


def build_bpe_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (reversible, with character offsets) that adds BOS and no EOS, like the LM tokenizer."""
    backend = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator((t for t in texts if t.strip()), trainer=trainer)
    bos = SPECIAL_TOKENS["bos_token"]
    backend.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                      special_tokens=[(bos, backend.token_to_id(bos))]),
    ])
    return PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)


def train_bpe_tokenizer(texts: list[str], vocab_size: int, training_args) -> PreTrainedTokenizerFast:
    """Trained once by the main process and saved in output_dir/bpe_tokenizer; the other processes load it."""
    folder = Path(training_args.output_dir) / "bpe_tokenizer"
    with training_args.main_process_first(desc="training the BPE tokenizer"):
        if training_args.process_index == 0:
            tokenizer = build_bpe_tokenizer(texts, vocab_size)
            tokenizer.save_pretrained(folder)
            logger.info("trained a BPE tokenizer of %d tokens on %d sentences", len(tokenizer), len(texts))
        return AutoTokenizer.from_pretrained(folder)
