"""Per-word surprisal from a causal LM, and optionally how well it predicts human reading times: the library part of
run_surprisal.py (`main(argv)`), also run as `python -m fusion_lstm_surprisal.score`."""

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from transformers import AutoModelForCausalLM, AutoTokenizer, HfArgumentParser

from .reading_times import evaluate, plot, read_reading_times
from .surprisal import SurprisalScorer, read_sentences_of_words, write_tsv


logger = logging.getLogger("run_surprisal")


@dataclass
class SurprisalArguments:
    model_name_or_path: str = field(metadata={"help": "A causal LM: a folder or a Hub id."})
    input_file: str = field(metadata={"help": "Sentences (.txt, one a line) or words (.tsv with a word column)."})
    output_file: str = field(metadata={"help": "The TSV to write: one row per input word."})
    word_column: str = field(default="word", metadata={"help": "The TSV's word column."})
    sentence_column: str | None = field(default=None, metadata={"help": "The TSV's sentence id column (default: "
                                                                        "sentences end at '.' or '?')."})
    document_column: str | None = field(default=None, metadata={"help": "The TSV's document column (Natural "
                                                                        "Stories: item); a text file separates "
                                                                        "documents by blank lines."})
    context_sentences: int | None = field(default=None, metadata={
        "help": "Read each sentence after the K sentences before it in its document (conditioned on, never scored). "
                "Default: a fusion model's own (as it was trained), 0 for other models."})
    reading_times: str | None = field(default=None, metadata={"help": "A TSV of reading times, one row per input "
                                                                      "word (e.g. Natural Stories)."})
    rt_column: str = field(default="meanItemRT", metadata={"help": "The reading-time column."})
    encoder_name_or_path: str | None = field(default=None, metadata={
        "help": "For a fusion model with a BPE: the encoder's tokenizer (default: the packaged MiniLM)."})
    batch_size: int = field(default=16, metadata={"help": "Sentences per forward pass."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, ... (default: cuda when available)."})
    trust_remote_code: bool = field(default=True, metadata={"help": "Load a model's own code (fusion models)."})

    def __post_init__(self):
        if self.context_sentences is not None and self.context_sentences < 0:
            raise ValueError(f"--context_sentences must be 0 or more, got {self.context_sentences}.")
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be at least 1, got {self.batch_size}.")
        for name in ("input_file", "reading_times"):
            if getattr(self, name) and not Path(getattr(self, name)).is_file():
                raise FileNotFoundError(f"--{name} {getattr(self, name)} does not exist.")
        self.check_outputs()

    def outputs(self) -> list[Path]:
        """Every file this run writes: the TSV and, with reading times, its JSON and PNG."""
        output = Path(self.output_file)
        extra = [output.with_suffix(".reading_times.json"), output.with_suffix(".reading_times.png")]
        return [output, *(extra if self.reading_times else [])]

    def check_outputs(self):
        """Before any work: no output writes over an input, and the output's folder exists (it is created) and can
        be written, so that a long scoring never dies at its last step."""
        inputs = {Path(p).resolve(): name for name, p in (("input_file", self.input_file),
                                                          ("reading_times", self.reading_times)) if p}
        for path in self.outputs():
            if path.resolve() in inputs:
                raise ValueError(f"--output_file {self.output_file} would write {path} over --{inputs[path.resolve()]}:"
                                 " choose another output file.")
            if path.is_dir():
                raise IsADirectoryError(f"{path} is a folder: --output_file names the TSV to write.")
        folder = Path(self.output_file).parent
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(f"Cannot write into {folder} (--output_file): choose a folder you can write.")


def load_model(model_name_or_path: str, trust_remote_code: bool = True, encoder_name_or_path: str | None = None):
    """The model, its tokenizer and, for a fusion model, its encoder's tokenizer (used only with a BPE)."""
    model = AutoModelForCausalLM.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    encoder_tokenizer = None
    if getattr(model.config, "model_type", None) == "fusion_lstm" and model.config.uses_fusion:
        from modeling_fusion_lstm import default_encoder_path

        encoder_tokenizer = AutoTokenizer.from_pretrained(encoder_name_or_path or default_encoder_path())
    return model, tokenizer, encoder_tokenizer


def main(argv: list[str] | None = None) -> dict | None:
    parser = HfArgumentParser(SurprisalArguments)
    (args,) = parser.parse_args_into_dataclasses(args=sys.argv[1:] if argv is None else argv)
    logging.basicConfig(format="%(asctime)s - %(name)s - %(message)s", datefmt="%H:%M:%S", level=logging.INFO)

    sentences = read_sentences_of_words(args.input_file, args.word_column, args.sentence_column,
                                        args.document_column)
    reading_times = read_reading_times(args.reading_times, args.rt_column, args.word_column) if (
        args.reading_times) else None
    model, tokenizer, encoder_tokenizer = load_model(args.model_name_or_path, args.trust_remote_code,
                                                     args.encoder_name_or_path)
    scorer = SurprisalScorer(model, tokenizer, encoder_tokenizer, args.batch_size, args.device)
    rows = scorer.score(sentences, args.context_sentences)
    write_tsv(rows, args.output_file)
    logger.info("%d sentences, %d words: wrote %s", len(sentences), len(rows), args.output_file)
    if reading_times is None:
        return None
    name = Path(args.model_name_or_path).name
    result = {"model": args.model_name_or_path, "input_file": args.input_file,
              **evaluate(rows, reading_times, args.reading_times)}
    output = Path(args.output_file)
    output.with_suffix(".reading_times.json").write_text(json.dumps(result, indent=2))
    plot({name: result}, {name: np.array([r.surprisal for r in rows])}, np.array([rt for _, rt in reading_times]),
         output.with_suffix(".reading_times.png"))
    logger.info("Pearson r %.3f, Spearman rho %.3f, ΔLL %.5f nats per word (%d words in the regression)",
                result["pearson_r"], result["spearman_rho"], result["delta_log_likelihood"],
                result["regression_words"])
    return result


if __name__ == "__main__":
    main()
