"""Train a sentence-embedding fusion LSTM language model with the Hugging Face Trainer: the library part of
run_clm.py (`main(argv)`), also run as `python -m fusion_lstm_training.clm`.

    python run_clm.py configuration/train/demo.json [--flag value …]   # flags after the file override it
    python run_clm.py --train_file train.txt --validation_file valid.txt --fusion concat --output_dir out --do_train --do_eval
    accelerate launch --config_file configuration/accelerate/cpu_ddp.yaml run_clm.py configuration/train/demo.json

Sentence-level as in the paper: every line is one sample, BOS … EOS. Prefix embeddings e_j are precomputed once
into a float16 Arrow cache (split between processes under a distributed launch) and fed as `fusion_embeds`.
"""

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import Path

import datasets
import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    EarlyStoppingCallback,
    PreTrainedConfig,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

import modeling_fusion_lstm
from fusion_lstm_data.batches import FusionDataCollator
from fusion_lstm_data.documents import CONTEXT_CONTROLS
from fusion_lstm_data.embedder import PrefixEmbedder
from fusion_lstm_data.cli import argument_parser
from fusion_lstm_data.files import TEXT_EXTENSIONS, check_local_folder, read_json_object
from modeling_fusion_lstm import FUSIONS, FusionLSTMConfig, FusionLSTMForCausalLM
from modeling_fusion_lstm.configuration_fusion_lstm import CONTEXTS, ENCODER_POOLING_CHOICES
from modeling_fusion_lstm.prefix_encoder_fusion_lstm import EncoderWindow

from .bpe import train_bpe_tokenizer
from .callbacks import FusionDropoutSchedule, parse_schedule
from .data import load_splits, tokenize_sentences, with_context
from .embeddings import embedding_cache
from .metrics import LanguageModelMetrics, preprocess_logits_for_metrics
from .precision import check_cpu_bf16
from .vectors import (
    SourceOptions, check_source, make_source, needs_model_encoder, needs_training_text, sources_help,
)


logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A fusion_lstm checkpoint to continue from (local folder or Hub id)."}
    )
    encoder_name_or_path: str | None = field(
        default=None, metadata={"help": "Encoder for a new model (default: the embedded all-MiniLM-L6-v2)."}
    )
    fusion: str = field(
        default="concat",
        metadata={"help": "; ".join(f"{name}: {spec.description}" for name, spec in FUSIONS.items())},
    )
    encoder_pooling: str = field(default="cls", metadata={"help": ", ".join(ENCODER_POOLING_CHOICES)})
    fusion_context: str = field(
        default="prefix", metadata={"help": "What the encoder reads at position j: " + "; ".join(
            f"{name}: {spec.description}" for name, spec in CONTEXTS.items()) + " (the modes that read the "
            "document's previous sentences need --context_sentences)."}
    )
    fusion_context_fraction: float = field(default=0.5, metadata={"help": "k of subr and subl, in [0, 1]"})
    config_overrides: str | None = field(
        default=None, metadata={"help": "Config fields for a new model, e.g. 'hidden_size=256,dropout=0.1'."}
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "An LM tokenizer other than the model's."})
    train_tokenizer_vocab_size: int | None = field(
        default=None, metadata={"help": "Train a BPE tokenizer of this size on the training text (the paper: 8192)."}
    )
    fusion_dropout_schedule: str | None = field(
        default=None, metadata={"help": "Probability that e_j is dropped, levels held for equal parts of training: "
                                "0to1 (0, .25, .5, .75, 1), 1to0 or e.g. 0.5,0.25,0."}
    )
    fusion_dropout_mode: str = field(
        default="vector", metadata={"help": "vector: whole e_j dropped, not rescaled; element: F.dropout on e_j (the "
                                    "paper's code)"}
    )
    context_sentences: int = field(
        default=0, metadata={"help": "Train each sentence with the K sentences before it in its document (a blank line "
                             "separates documents in .txt files; json/csv: a `document` column). The sentence stays "
                             "the unit and its own tokens are all that is scored; max_train_samples keeps the first N "
                             "sentences of the file, each with its context. Saved in the model's config."}
    )
    context_as_tokens: bool = field(
        default=False, metadata={"help": "The LSTM reads the context sentences as tokens before the sentence (BOS, "
                                 "each context sentence and EOS, then the sentence); otherwise only the encoder reads "
                                 "them, per --fusion_context previous, document or prefix+previous."}
    )
    max_context_length: int = field(
        default=128, metadata={"help": "With --context_sentences: at most this many context tokens, the most recent."}
    )
    generation_prompt: str | None = field(
        default=None, metadata={"help": "After training, reload output_dir with AutoModelForCausalLM and continue this."}
    )

    def __post_init__(self):
        for flag in ("model_name_or_path", "encoder_name_or_path", "tokenizer_name"):
            check_local_folder(getattr(self, flag), flag)
        # a new model's fields are checked by its config itself: one set of checks, each naming its field (a
        # checkpoint brings its own config)
        if not self.model_name_or_path:
            self.config_fields()
        if self.fusion_dropout_schedule:
            parse_schedule(self.fusion_dropout_schedule)
        if self.train_tokenizer_vocab_size is not None:
            if self.train_tokenizer_vocab_size < 1:
                raise ValueError("--train_tokenizer_vocab_size must be a positive number of tokens.")
            if self.model_name_or_path or self.tokenizer_name:
                raise ValueError("--train_tokenizer_vocab_size trains a new tokenizer for a new model: drop "
                                 "--model_name_or_path / --tokenizer_name, or the trained tokenizer.")

    def config_fields(self) -> dict:
        """The FusionLSTMConfig fields of a new model that these arguments set, --config_overrides parsed by
        transformers' own `PreTrainedConfig.update_from_string`; checked by building the config, whose errors name
        the field."""
        fields = {"fusion": self.fusion, "encoder_pooling": self.encoder_pooling, "fusion_context": self.fusion_context,
                  "fusion_context_fraction": self.fusion_context_fraction,
                  "fusion_dropout_mode": self.fusion_dropout_mode, "context_sentences": self.context_sentences,
                  "context_as_tokens": self.context_as_tokens, "max_context_length": self.max_context_length}
        config = FusionLSTMConfig(**fields)
        if self.config_overrides:
            known = {f.name for f in dataclass_fields(FusionLSTMConfig)}
            names = []
            for item in self.config_overrides.split(","):
                name, sep, _ = item.partition("=")
                if not sep or name.strip() not in known:
                    raise ValueError(f"--config_overrides: {item!r} is not 'field=value' with a FusionLSTMConfig "
                                     "field.")
                if name.strip() in fields:  # the data pipeline reads the flag: an override would only reach the config
                    raise ValueError(f"--config_overrides {item!r}: {name.strip()} has its own flag, which the data "
                                     f"pipeline reads too; set it with --{name.strip()}.")
                names.append(name.strip())
            try:
                config.update_from_string(self.config_overrides)
            except ValueError as error:  # transformers names the value, not the field: say both
                raise ValueError(f"--config_overrides {self.config_overrides!r}: {error} (each field takes a value of "
                                 "its type: hidden_size=256, dropout=0.1, tie_word_embeddings=true).") from None
            fields.update({name: getattr(config, name) for name in names})
            FusionLSTMConfig(**fields)  # the overridden values checked together with the rest
        return fields

    @property
    def fuses(self) -> bool:
        """Whether a new model built from these arguments reads e_j (asked of the config)."""
        return FusionLSTMConfig(fusion=self.fusion).uses_fusion

    @property
    def prefix_context(self) -> EncoderWindow:
        return EncoderWindow(self.fusion_context, self.fusion_context_fraction)


@dataclass
class DataTrainingArguments:
    dataset_name: str | None = field(
        default=None, metadata={"help": "A `datasets` dataset with a text column (Hub id, e.g. wikitext, or folder)."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "e.g. wikitext-103-raw-v1 (the paper)."})
    split_sentences: bool = field(
        default=False, metadata={"help": "Split the dataset's paragraphs into sentences and drop headings."}
    )
    train_file: str | None = field(default=None, metadata={"help": "Text (one sentence a line), json or csv."})
    validation_file: str | None = field(default=None)
    test_file: str | None = field(default=None)
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=None)
    max_seq_length: int = field(default=128, metadata={"help": "Longer sentences are truncated (and counted)."})
    validation_split_percentage: int = field(
        default=5, metadata={"help": "Share of train used for validation when there is no validation_file."}
    )
    embedding_cache_dir: str | None = field(
        default=None, metadata={"help": "Where precomputed prefix embeddings live (default: the datasets cache)."}
    )
    precompute_fusion_embeddings: bool = field(
        default=True, metadata={"help": "Precompute e_j once; false: the model's encoder computes them every step."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Train into an output_dir that is not empty, replacing what is there."}
    )
    fusion_vectors: str = field(
        default="encoder", metadata={"help": f"Where e_j comes from: {sources_help()}; or your own source as "
                                     "module:attr (see fusion_lstm_training/vectors.py). A source not made around "
                                     "the model's encoder makes a model without encoder, fed its vectors."}
    )
    fusion_vectors_size: int = field(default=1024, metadata={"help": "At most this many words for count and tfidf."})
    eval_without_fusion: bool = field(
        default=False, metadata={"help": "Evaluate again with every e_j zeroed: eval_without_fusion_perplexity."}
    )
    eval_context_controls: bool = field(
        default=False, metadata={"help": "With --context_sentences: evaluate the validation sentences again with "
                                 "every context emptied (eval_empty_context_perplexity) and with another document's "
                                 "(eval_other_document_perplexity): how much of a gain is the context's content."}
    )
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop training once the validation loss has not improved for this many "
                                "evaluations (transformers' EarlyStoppingCallback; needs eval_strategy, "
                                "load_best_model_at_end and metric_for_best_model eval_loss)."}
    )
    embed_only: bool = field(
        default=False, metadata={"help": "Precompute the e_j cache of the splits the run would use, then stop before "
                                 "training (e.g. once on a GPU, before several runs that share it train in parallel)."}
    )

    def __post_init__(self):
        files = [f for f in (self.train_file, self.validation_file, self.test_file) if f]
        if self.dataset_name and files:
            raise ValueError("Pass either --dataset_name or data files (--train_file …), not both.")
        for file in files:
            if Path(file).suffix.lower() not in TEXT_EXTENSIONS:
                raise ValueError(f"{file}: unsupported extension; use one of {', '.join(TEXT_EXTENSIONS)}.")
            if not Path(file).is_file():
                raise FileNotFoundError(f"Data file {file} does not exist.")
        if self.max_seq_length < 2:
            raise ValueError(f"--max_seq_length={self.max_seq_length}: a sample needs at least 2 tokens (BOS and one "
                             "token to predict).")
        check_source(self.fusion_vectors)
        if self.fusion_vectors_size < 1:
            raise ValueError("--fusion_vectors_size must be at least 1.")
        if not 0 <= self.validation_split_percentage < 100:
            raise ValueError("--validation_split_percentage must lie in [0, 100).")
        for name in ("max_train_samples", "max_eval_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1.")


def json_to_flags(values: dict) -> list[str]:
    """A training JSON file as command-line flags, so that flags given after the file override it."""
    flags = []
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, list):
            flags += [f"--{name}", *map(str, value)]
        elif isinstance(value, dict):
            flags += [f"--{name}", json.dumps(value)]
        else:
            flags += [f"--{name}", str(value).lower() if isinstance(value, bool) else str(value)]
    return flags


def parse_arguments(argv: list[str] | None = None) -> tuple[ModelArguments, DataTrainingArguments, TrainingArguments]:
    """Flags, or a JSON file optionally followed by flags that override it. Several processes on CPU join one
    gloo process group only with use_cpu=True; without it each process silently trains its own model, so it is
    switched on before TrainingArguments sets up the device, and a world size that disagrees with the launch is
    refused."""
    parser = argument_parser((ModelArguments, DataTrainingArguments, TrainingArguments), description=__doc__,
                             usage="python run_clm.py CONFIG.json [--flag value ...]  or  python run_clm.py --flag "
                                   "value ...  (flags: the model's, the data's, then transformers' TrainingArguments)")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith(".json"):
        argv = json_to_flags(read_json_object(argv[0], "training configuration")) + argv[1:]
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and not torch.cuda.is_available() and "--use_cpu" not in argv:
        argv += ["--use_cpu", "true"]
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    check_arguments(model_args, data_args, training_args)
    if training_args.device.type == "cpu":  # pinned memory only serves copies to an accelerator (torch warns)
        training_args.dataloader_pin_memory = False
    if launched != training_args.world_size:
        raise RuntimeError(
            f"{launched} processes were launched but the Trainer sees world size {training_args.world_size}: they "
            "would train separate models. On CPU keep use_cpu=True; check the accelerate config."
        )
    return model_args, data_args, training_args


def check_arguments(model_args: ModelArguments, data_args: DataTrainingArguments, training_args: TrainingArguments):
    """Checks that span the argument groups (each group checks itself in __post_init__): before any work."""
    if model_args.context_sentences and data_args.fusion_vectors != "encoder":
        raise ValueError(f"--fusion_vectors={data_args.fusion_vectors} with --context_sentences: only the encoder reads "
                         "the document's context so far.")
    if model_args.context_sentences and data_args.dataset_name:
        raise ValueError("--context_sentences reads documents from data files (--train_file …): drop --dataset_name.")
    has_train = data_args.train_file or data_args.dataset_name
    if training_args.do_train and not has_train:
        raise ValueError("--do_train needs --train_file or a --dataset_name with a train split.")
    has_validation = data_args.validation_file or data_args.dataset_name or (
        data_args.train_file and data_args.validation_split_percentage
    )
    if training_args.do_eval and not has_validation:
        raise ValueError("--do_eval needs --validation_file (or a train file with --validation_split_percentage > 0).")
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size"):
        if getattr(training_args, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(training_args, name)}.")
    resume = training_args.resume_from_checkpoint
    if resume and not Path(resume).is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {resume} is not a folder (a checkpoint-N of output_dir).")
    output_dir = Path(training_args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"--output_dir {output_dir} is a file: the run writes a folder there; choose another "
                              "path (files you gave are never written over).")
    if training_args.do_train and not resume and not data_args.overwrite_output_dir and output_dir.is_dir() and any(
        output_dir.iterdir()
    ):
        checkpoint = get_last_checkpoint(str(output_dir))
        how = (f"resume the run with --resume_from_checkpoint {checkpoint}, or " if checkpoint else "")
        raise FileExistsError(f"--output_dir {output_dir} is not empty: {how}replace it with --overwrite_output_dir "
                              "true, or choose another folder.")
    if model_args.train_tokenizer_vocab_size and not data_args.precompute_fusion_embeddings and (
        model_args.fuses
    ):
        raise ValueError("With a trained tokenizer the encoder cannot read the LM's ids: keep precompute on.")
    if data_args.fusion_vectors != "encoder" and not data_args.precompute_fusion_embeddings:
        raise ValueError(f"--fusion_vectors={data_args.fusion_vectors} is fed through the embedding cache: keep "
                         "--precompute_fusion_embeddings on.")
    if model_args.fusion_dropout_schedule and not model_args.fuses and not model_args.model_name_or_path:
        raise ValueError("--fusion_dropout_schedule drops e_j, but --fusion none fuses nothing.")
    if training_args.push_to_hub:  # the repo id and the token, before hours of training
        from hub.push import check_push

        check_push(training_args.hub_model_id or Path(training_args.output_dir).name, training_args.hub_token)
    if data_args.early_stopping_patience is not None:
        if data_args.early_stopping_patience < 1:
            raise ValueError("--early_stopping_patience must be at least 1 evaluation.")
        if str(training_args.eval_strategy) in ("no", "IntervalStrategy.NO") or not training_args.load_best_model_at_end:
            raise ValueError("--early_stopping_patience compares evaluations and keeps the best model: set "
                             "--eval_strategy epoch (or steps) and --load_best_model_at_end true.")
    if data_args.embed_only and (not model_args.fuses or not data_args.precompute_fusion_embeddings):
        raise ValueError("--embed_only precomputes the e_j cache: it needs a fusing model (--fusion other than none) "
                         "and --precompute_fusion_embeddings on.")
    if data_args.eval_without_fusion and not model_args.fuses and not model_args.model_name_or_path:
        raise ValueError("--eval_without_fusion zeroes e_j, but --fusion none fuses nothing.")
    if data_args.fusion_vectors != "encoder" and not model_args.fuses and not model_args.model_name_or_path:
        raise ValueError(f"--fusion_vectors={data_args.fusion_vectors} with --fusion none: the model fuses nothing.")


def context_reading(model_args: ModelArguments) -> tuple[int, int]:
    """How many previous sentences of its document each sample carries, and at most how many of their tokens: as a
    checkpoint to continue from was trained (its config says), else as the arguments say; arguments that contradict
    the checkpoint are refused."""
    if not model_args.model_name_or_path:
        return model_args.context_sentences, model_args.max_context_length
    config = checkpoint_config(model_args.model_name_or_path)
    saved = (config.context_sentences, config.context_as_tokens)
    asked = (model_args.context_sentences, model_args.context_as_tokens)
    if asked != (0, False) and asked != saved:
        raise ValueError(f"{model_args.model_name_or_path} was trained with context_sentences={saved[0]}, "
                         f"context_as_tokens={saved[1]}; drop --context_sentences/--context_as_tokens to use its own.")
    return saved[0], config.max_context_length


def checkpoint_config(model_name_or_path: str) -> FusionLSTMConfig:
    """The config of a fusion_lstm checkpoint to continue from, read by this package's FusionLSTMConfig (a config
    saved before a field existed gets its default); any other model type is refused."""
    model_type = PreTrainedConfig.get_config_dict(model_name_or_path)[0].get("model_type")
    if model_type != FusionLSTMConfig.model_type:
        raise ValueError(
            f"{model_name_or_path} is a {model_type!r} model, not a fusion_lstm checkpoint. To build a fusion model "
            "around it as the encoder, pass it as --encoder_name_or_path."
        )
    return FusionLSTMConfig.from_pretrained(model_name_or_path)


def load_model(model_args: ModelArguments, tokenizer, encoder_path: str, source=None) -> FusionLSTMForCausalLM:
    """The checkpoint to continue from, or a new model: around the encoder, or, for an external vector `source`,
    without encoder, for e_j of the source's width."""
    if model_args.model_name_or_path:
        model = FusionLSTMForCausalLM.from_pretrained(model_args.model_name_or_path,
                                                      config=checkpoint_config(model_args.model_name_or_path))
        if source is not None and source.width != model.config.fusion_embedding_size:
            raise ValueError(f"{model_args.model_name_or_path} fuses e_j of width {model.config.fusion_embedding_size}"
                             f", but the vector source gives {source.width}.")
        return model
    fields = {
        "vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id, **model_args.config_fields(),
    }
    if source is not None:
        return FusionLSTMForCausalLM(FusionLSTMConfig(fusion_embedding_size=source.width, **fields))
    return FusionLSTMForCausalLM.from_encoder_pretrained(encoder_path, **fields)


# the config fields a checkpoint's weights and data depend on: a resumed run must build the same (the rest, such as
# dropout, may change when training continues)
RESUMED_FIELDS = ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "projection_size", "fusion",
                  "fusion_context", "fusion_context_fraction", "encoder_pooling", "fusion_embedding_size",
                  "fusion_projection", "context_sentences", "context_as_tokens", "max_context_length",
                  "tie_word_embeddings")


def check_resume(checkpoint: str, config: FusionLSTMConfig):
    """Before a checkpoint is resumed: it is whole (its weights' file readable to the end) and was made by a model
    of the same build as this run's, else refused naming the flag that differs (as torch's size mismatch or the
    optimizer's error would not)."""
    from safetensors import SafetensorError, safe_open

    weights = Path(checkpoint) / "model.safetensors"
    try:
        with safe_open(str(weights), "pt") as handle:
            handle.keys()
    except (SafetensorError, OSError) as error:
        raise ValueError(f"--resume_from_checkpoint {checkpoint}: {weights.name} cannot be read ({error}); a save cut "
                         "short? Resume from an earlier checkpoint-N, or start again.") from None
    saved = FusionLSTMConfig.from_pretrained(checkpoint)
    differ = [name for name in RESUMED_FIELDS if getattr(saved, name) != getattr(config, name)]
    if differ:
        own_flags = {f.name for f in dataclass_fields(ModelArguments)}
        flags = [f"--{name}" if name in own_flags else f"--config_overrides {name}=…" for name in differ]
        raise ValueError(f"--resume_from_checkpoint {checkpoint} was trained with "
                         f"{', '.join(f'{n}={getattr(saved, n)!r}' for n in differ)}, this run builds "
                         f"{', '.join(f'{n}={getattr(config, n)!r}' for n in differ)}: resume with the checkpoint's "
                         f"settings (drop or change {', '.join(flags)}), or start a new run in another --output_dir.")


def context_controls(validation) -> dict:
    """The validation split with its contexts replaced, one split per CONTEXT_CONTROLS entry
    (validation_<control>)."""
    contexts, documents = validation["context"], validation["document"]
    return {f"validation_{name}": validation.remove_columns("context").add_column("context", control(contexts, documents))
            for name, control in CONTEXT_CONTROLS.items()}


def external_source(data_args: DataTrainingArguments, tokenizer, raw, encoder_path: str, context: EncoderWindow,
                    seed: int):
    """The source of e_j named by --fusion_vectors when it is made without the model (SOURCES in vectors.py), which
    decides the model (one without encoder, for vectors of its width); None for a source made around the model's own
    encoder (encoder, shuffled)."""
    name = data_args.fusion_vectors
    if needs_model_encoder(name):
        return None
    options = SourceOptions(encoder_path=encoder_path, context=context, max_features=data_args.fusion_vectors_size,
                            seed=seed)
    return make_source(name, tokenizer, training_texts(name, raw), options)


def model_source(model, data_args: DataTrainingArguments, tokenizer, raw, encoder_path: str, training_args):
    """The source of e_j made around the model's own prefix encoder (--fusion_vectors encoder or shuffled). An LM
    vocabulary that is not the encoder's (e.g. a BPE) makes e_j embed the text of each prefix, tokenized by the
    encoder's own tokenizer; with --bf16 the encoder runs under bfloat16 autocast (cached apart from float32)."""
    encoder_tokenizer = None if model.config.encoder_reads_lm_ids else AutoTokenizer.from_pretrained(encoder_path)
    autocast = torch.bfloat16 if training_args.bf16 else None
    embedder = PrefixEmbedder(model.prefix_encoder, tokenizer, encoder_tokenizer, autocast)
    return make_source(data_args.fusion_vectors, tokenizer, training_texts(data_args.fusion_vectors, raw),
                       SourceOptions(encoder=embedder, seed=training_args.seed))


def training_texts(name: str, raw) -> list[str] | None:
    """The training sentences a source is fitted on (None for a source that needs none)."""
    if not needs_training_text(name):
        return None
    if "train" not in raw:
        raise ValueError(f"--fusion_vectors={name} is fitted on the training text: pass --train_file.")
    return [t.strip() for t in raw["train"]["text"] if t.strip()]


def main(argv: list[str] | None = None):
    """run_clm.py: `argv` (default: the command line) is flags, or a JSON file optionally followed by flags."""
    model_args, data_args, training_args = parse_arguments(argv)
    # the Trainer would push its own generic card at every save; this script pushes once, with the fusion card
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    # transformers/datasets follow --log_level (passive: warnings); this script's own progress lines are info on
    # the main process and follow --log_level_replica on the others
    log_level = training_args.get_process_log_level()
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    own_level = logging.INFO if training_args.should_log else log_level
    for log in (logger, logging.getLogger("fusion_lstm_training")):
        log.setLevel(own_level)
    logger.info(
        "process %d of world size %d, device %s", training_args.process_index, training_args.world_size,
        training_args.device,
    )
    set_seed(training_args.seed)
    if training_args.bf16 and training_args.device.type == "cpu":
        check_cpu_bf16()  # before any work: without native bfloat16 it is slow, and fusion none crashes in oneDNN

    # Data: sentences, and with context the previous sentences of their documents (as the model reads them)
    context_sentences, max_context_length = context_reading(model_args)
    if data_args.eval_context_controls and not (context_sentences and training_args.do_eval):
        raise ValueError("--eval_context_controls evaluates a model that reads the document's context: it needs "
                         "--context_sentences (or a model trained with them) and --do_eval.")
    raw = load_splits(
        context_sentences=context_sentences,
        train_file=data_args.train_file, validation_file=data_args.validation_file, test_file=data_args.test_file,
        dataset_name=data_args.dataset_name, dataset_config_name=data_args.dataset_config_name,
        split_sentences=data_args.split_sentences, validation_split_percentage=data_args.validation_split_percentage,
        max_train_samples=data_args.max_train_samples, max_eval_samples=data_args.max_eval_samples,
    )
    if training_args.do_train and "train" not in raw:
        raise ValueError(f"--do_train: {data_args.dataset_name} has no train split.")
    validation_documents = len(set(raw["validation"]["document"])) if (
        data_args.eval_context_controls and "validation" in raw) else None
    if validation_documents is not None and validation_documents < 2:
        raise ValueError(f"--eval_context_controls gives each sentence another document's context, but the validation "
                         f"data ({data_args.validation_file or 'the validation split'}) holds {validation_documents} "
                         "document: it needs at least two (a blank line between documents, or a `document` column).")

    # Tokenizer and model
    encoder_path = model_args.encoder_name_or_path or modeling_fusion_lstm.default_encoder_path()
    if model_args.train_tokenizer_vocab_size:
        tokenizer = train_bpe_tokenizer(raw["train"]["text"], model_args.train_tokenizer_vocab_size, training_args)
    elif model_args.tokenizer_name:
        tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name)
    elif model_args.model_name_or_path:
        tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    else:
        tokenizer = modeling_fusion_lstm.load_tokenizer(encoder_path)
    external = external_source(data_args, tokenizer, raw, encoder_path, model_args.prefix_context, training_args.seed)
    model = load_model(model_args, tokenizer, encoder_path, external)
    if training_args.do_train and training_args.resume_from_checkpoint:
        check_resume(training_args.resume_from_checkpoint, model.config)
    uses_fusion = model.config.uses_fusion
    # e_j's one source, built once the model is: made without it, or around its own encoder (None without fusion)
    source = (external or model_source(model, data_args, tokenizer, raw, encoder_path, training_args)) if (
        uses_fusion) else None
    # the precompute reads text and offsets unless the model's encoder reads the LM's own token ids
    keep_offsets = uses_fusion and not (external is None and model.config.encoder_reads_lm_ids)

    # Preprocessing: only the splits this run uses
    used = {"train": training_args.do_train, "validation": training_args.do_eval, "test": training_args.do_predict}
    with training_args.main_process_first(desc="tokenizing"):
        tokenized = {
            split: tokenize_sentences(data, tokenizer, data_args.max_seq_length, split, keep_offsets=keep_offsets)
            for split, data in raw.items()
            if used[split]
        }
        if context_sentences:  # each sentence's previous sentences, as their own tokens, for the LSTM or the encoder
            if data_args.eval_context_controls and "validation" in tokenized:
                tokenized.update(context_controls(tokenized["validation"]))
            tokenized = {split: with_context(data, tokenizer, max_context_length, split)
                         for split, data in tokenized.items()}
    embedding_speed = None  # of the training sentences' precompute, when there is one
    if uses_fusion and data_args.precompute_fusion_embeddings:
        if external is None:
            model.prefix_encoder.to(training_args.device)
        cache = embedding_cache(source, data_args.embedding_cache_dir)
        tokenized = {split: cache.attach(data, split) for split, data in tokenized.items()}
        if "train" in tokenized:
            # the encoder's cost: how fast the training sentences' prefixes were embedded (when they were)
            embedding_speed = cache.record("train")["sentences_per_second"]
        if data_args.embed_only:
            logger.info("--embed_only: the e_j cache of %s is complete; nothing is trained", ", ".join(tokenized))
            return
    tokenized = {
        split: data.remove_columns([c for c in ("text", "offsets", "document", "context", "context_text")
                                   if c in data.column_names])
        for split, data in tokenized.items()
    }
    # e_j come out of the cache as arrays: decoded into Python lists they made the data loader the bottleneck on a GPU
    # (bench/run.py --sections loader)
    tokenized = {split: data.with_format("numpy", columns=["fusion_embeds"], output_all_columns=True)
                 if "fusion_embeds" in data.column_names else data for split, data in tokenized.items()}

    callbacks = []
    if data_args.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=data_args.early_stopping_patience))
    if model_args.fusion_dropout_schedule:
        schedule = parse_schedule(model_args.fusion_dropout_schedule)
        logger.info("fusion dropout schedule, levels held for equal parts of training: %s", schedule)
        callbacks.append(FusionDropoutSchedule(schedule))

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=tokenized.get("train") if training_args.do_train else None,
        eval_dataset=tokenized.get("validation") if training_args.do_eval else None,
        processing_class=tokenizer,
        data_collator=FusionDataCollator(pad_token_id=tokenizer.pad_token_id),
        compute_metrics=LanguageModelMetrics() if training_args.do_eval or training_args.do_predict else None,
        preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        callbacks=callbacks,
    )

    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        metrics = {**result.metrics, "train_samples": len(tokenized["train"])}
        if embedding_speed is not None:
            metrics["train_embedding_sentences_per_second"] = round(embedding_speed, 2)
        # the epochs trained: fewer than asked where early stopping ended the run
        epochs = trainer.state.epoch or training_args.num_train_epochs
        metrics["train_epochs"] = round(epochs, 2)
        tokens = sum(len(ids) for ids in tokenized["train"]["input_ids"]) * epochs
        if training_args.max_steps <= 0:  # whole epochs: the tokens seen are known exactly
            metrics["train_tokens_per_second"] = round(tokens / metrics["train_runtime"], 1)
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
    # early stopping judges training's evaluations; it would only warn about the metric names of the ones below
    trainer.remove_callback(EarlyStoppingCallback)

    if training_args.do_eval:
        metrics = trainer.evaluate()
        metrics["eval_samples"] = len(tokenized["validation"])
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        if trainer.is_world_process_zero():
            print(f"validation perplexity: {metrics['eval_perplexity']:.2f}")
        for control in CONTEXT_CONTROLS:
            if f"validation_{control}" in tokenized:  # the same sentences, their contexts replaced
                metrics = trainer.evaluate(tokenized[f"validation_{control}"], metric_key_prefix=f"eval_{control}")
                metrics[f"eval_{control}_samples"] = len(tokenized[f"validation_{control}"])
                trainer.log_metrics(f"eval_{control}", metrics)
                trainer.save_metrics(f"eval_{control}", metrics)
        if data_args.eval_without_fusion:
            # what the model does without its embeddings: every e_j zeroed
            trainer.model.set_fusion_dropout(1.0, during_eval=True)
            metrics = trainer.evaluate(metric_key_prefix="eval_without_fusion")
            trainer.model.set_fusion_dropout(None)
            trainer.log_metrics("eval_without_fusion", metrics)
            trainer.save_metrics("eval_without_fusion", metrics)

    if training_args.do_predict and "test" in tokenized:
        metrics = trainer.evaluate(tokenized["test"], metric_key_prefix="test")
        metrics["test_samples"] = len(tokenized["test"])
        trainer.log_metrics("test", metrics)
        trainer.save_metrics("test", metrics)

    if model_args.generation_prompt and training_args.do_train and trainer.is_world_process_zero():
        show_generation(training_args.output_dir, model_args.generation_prompt, encoder_path)

    if push_to_hub and trainer.is_world_process_zero():
        publish(trainer.model, model_args, data_args, training_args, encoder_path)


def publish(model, model_args, data_args, training_args, encoder_path):
    """Write the model card into output_dir and push the folder (model with encoder, tokenizer, code, card)."""
    from hub.card import build_model_card
    from hub.push import push_folder

    repo_id = training_args.hub_model_id or Path(training_args.output_dir).name
    if data_args.dataset_name:
        data = f"{data_args.dataset_name} ({data_args.dataset_config_name or 'default'})"
    else:
        data = ", ".join(Path(f).name for f in (data_args.train_file, data_args.validation_file) if f)
    arguments = {
        "fusion": model.config.fusion, "encoder": model_args.encoder_name_or_path or "all-MiniLM-L6-v2 (packaged)",
        "encoder_pooling": model.config.encoder_pooling, "fusion_context": model.config.fusion_context,
        "config_overrides": model_args.config_overrides, "max_seq_length": data_args.max_seq_length,
        "num_train_epochs": training_args.num_train_epochs, "max_steps": training_args.max_steps,
        "per_device_train_batch_size": training_args.per_device_train_batch_size,
        "world_size": training_args.world_size, "learning_rate": training_args.learning_rate,
        "lr_scheduler_type": str(training_args.lr_scheduler_type), "warmup_steps": training_args.warmup_steps,
        "weight_decay": training_args.weight_decay, "seed": training_args.seed,
        "fusion_dropout_schedule": model_args.fusion_dropout_schedule,
        "train_tokenizer_vocab_size": model_args.train_tokenizer_vocab_size,
        "precompute_fusion_embeddings": data_args.precompute_fusion_embeddings,
        "fusion_vectors": data_args.fusion_vectors,
    }
    card = build_model_card(
        model, repo_id, training_args.output_dir, {k: v for k, v in arguments.items() if v is not None},
        encoder=encoder_path, dataset_id=data_args.dataset_name, dataset_label=data,
        training_description=f"Trained with `run_clm.py` on sentences from {data} (one sentence a sample, BOS … EOS).",
    )
    card.save(Path(training_args.output_dir) / "README.md")
    commit = push_folder(training_args.output_dir, repo_id, token=training_args.hub_token,
                         private=training_args.hub_private_repo)
    logger.info("pushed %s to %s", training_args.output_dir, commit.commit_url)


# how the reloaded model continues the prompt: sampled with a fixed seed and a repetition penalty, since a small LM's
# greedy continuation repeats one word ("the the the")
SHOWN_GENERATION = {"max_new_tokens": 20, "do_sample": True, "top_p": 0.9, "repetition_penalty": 1.3}
SHOWN_GENERATION_SEED = 0


def show_generation(output_dir: str, prompt: str, encoder_path: str):
    """Reload the saved folder as a user would and continue a prompt (SHOWN_GENERATION); a model with a vocabulary of
    its own (a trained BPE) embeds each prefix from its text, with the encoder's tokenizer."""
    model = AutoModelForCausalLM.from_pretrained(output_dir, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(output_dir, trust_remote_code=True)
    prefixes = {"tokenizer": tokenizer, "encoder_tokenizer": AutoTokenizer.from_pretrained(encoder_path)} if (
        model.config.encoder_reads_text) else {}
    torch.manual_seed(SHOWN_GENERATION_SEED)
    generated = model.generate(**tokenizer([prompt], return_tensors="pt"), **SHOWN_GENERATION, **prefixes)
    text = tokenizer.decode(generated[0], skip_special_tokens=True)
    how = ", ".join(f"{k} {v}" for k, v in SHOWN_GENERATION.items() if k != "max_new_tokens")
    print(f"reloaded {output_dir} with AutoModelForCausalLM; generated ({how}, seed {SHOWN_GENERATION_SEED}): {text}")


if __name__ == "__main__":
    main()
