"""The paper's experiments as data: each is a JSON file under configuration/experiments/ that expands, at a scale
(cpu or gpu), into runs of one kind; each finished run leaves one results JSON. Runs that already have their results
JSON are skipped, and a run killed after a checkpoint resumes from it, so a killed sweep continues where it stopped.

    configuration/experiments/scales.json   per scale: the run_clm arguments every experiment starts from, and
                                            the BPE tokenizer that all its runs share
    configuration/experiments/<name>.json   {"summary" (one line, for --help), "description", "kind",
                                            "report": {...the report's prose...},
                                            "scales": {scale: {...what the kind reads...}}}

A kind (RUN_KINDS) is one object that knows an experiment's runs at a scale, how to execute one and when a finished
one is complete:

    train       run_clm.py trainings: every combination of the grid's values ("grid": {arg: [values]}), each
                combined with every item of "each", then the "extra" runs; "run": arguments for all of them,
                "per_fusion": {fusion: arguments} for the runs of one fusion
    evaluate    run_clm.py evaluations of another experiment's models ("models": {"experiment", "where"}) on fixed
                samples of other files ("files")
    surprisal   run_surprisal.py on a reading-time corpus ("input_file", "document_column") with another experiment's
                models
    similarity  the prefix-embedding similarity over the scale's validation sentences, one run per "each" item

Adding an experiment of a known kind is one JSON file; adding a kind is one class and its entry in RUN_KINDS.
"""

import contextlib
import functools
import itertools
import json
import logging
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from transformers.trainer_utils import get_last_checkpoint

from fusion_lstm_data.files import read_json_object, read_sentences, text_lines
from fusion_lstm_surprisal.reading_times import held_out_text
from fusion_lstm_training.bpe import build_bpe_tokenizer
from fusion_lstm_training.precision import cpu_description, precision_arguments
from modeling_fusion_lstm import BASELINE_FUSION

from .records import RESULT_FIELDS, Result
from .tables import change, plain_table


ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS_DIR = ROOT / "configuration" / "experiments"
# files of the experiments folder that are not experiments
NOT_EXPERIMENTS = ("scales", "paper")
SCALES = tuple(json.loads((EXPERIMENTS_DIR / "scales.json").read_text()))  # cpu, gpu, large
# where the experiment configs read the shared data from (relative to the repository); --data_dir reads it elsewhere
SHARED_DATA = "../shared/data"
# --smoke_test: every run for two steps on a few sentences, to check a configuration without its cost
SMOKE_TEST = {"max_steps": 2, "max_train_samples": 32, "max_eval_samples": 16, "eval_strategy": "no",
              "save_strategy": "no", "load_best_model_at_end": False, "per_device_train_batch_size": 8,
              "per_device_eval_batch_size": 8, "early_stopping_patience": None}
# how a run's varying arguments appear in its id: concat_n750_seed1, concat_subl_k0.25_seed0 ("": the value alone;
# None: not in the id; a value true: the name alone)
ID_NAMES = {"max_train_samples": "n", "seed": "seed", "num_train_epochs": "ep", "domain": "on",
            "fusion_dropout_schedule": "", "fusion_dropout_mode": "", "fusion_context": "",
            "fusion_context_fraction": "k", "fusion_vectors": "", "encoder_pooling": "", "eval_without_fusion": None,
            "context_sentences": "ctx", "context_as_tokens": None, "eval_context_controls": None,
            "scored_context_sentences": "read", "tie_word_embeddings": "tied",
            "train_sampling_strategy": "", "per_device_train_batch_size": "batch", "learning_rate": "lr",
            "evaluate_every_steps": None}
logger = logging.getLogger(__name__)


@dataclass
class Run:
    """One run_clm.py run: its id, the arguments that vary across the experiment, and all its arguments."""

    id: str
    values: dict
    arguments: dict


@dataclass
class Scale:
    """Where an experiment's runs at one scale come from and go: the scale's base arguments (scales.json, then the
    experiment's "run"), its shared tokenizer, and the results folders."""

    name: str
    setting: dict  # the experiment's entry for this scale
    base: dict  # run_clm arguments every run starts from
    tokenizer: dict | None  # the scale's shared BPE ({"train_file", "vocab_size"}), None: the encoder's vocabulary
    folder: Path  # results_dir/<scale>/<experiment>
    scale_dir: Path  # results_dir/<scale>


class RunKind(Protocol):
    """One kind of run: an experiment's runs at a scale, how one executes, when a finished one is complete, and
    the terminal table of its results."""

    def runs(self, scale: Scale) -> list[Run]: ...

    def execute(self, run: Run, overrides: dict | None, **limits) -> dict:
        """Runs `run` and returns what its results JSON holds besides the bookkeeping: {"metrics", "arguments",
        …}; `limits` (run_script's timeout and log) are what the kind honours of them."""

    def is_complete(self, run: Run) -> bool: ...

    def summary(self, results: list[dict]) -> list[str]: ...


class TrainRuns:
    """run_clm.py trainings (the grid × each, then extra); a killed run resumes from its last checkpoint."""

    def runs(self, scale: Scale) -> list[Run]:
        base = with_shared_tokenizer(scale)
        runs = []
        for values in expand(scale.setting):
            run_id = run_name(values)
            # "per_fusion": arguments of the runs of one fusion that do not vary within it (e.g. the MLP's sizes)
            fixed = scale.setting.get("per_fusion", {}).get(values.get("fusion"), {})
            arguments = {**base, **fixed, **values, "output_dir": str(scale.folder / "runs" / run_id)}
            runs.append(Run(run_id, values, with_evaluation_steps(with_config_values(arguments))))
        return runs

    def execute(self, run: Run, overrides: dict | None, **limits) -> dict:
        """`limits`: run_script's timeout and log."""
        arguments = {**run.arguments, **(overrides or {})}
        output_dir = Path(arguments["output_dir"])
        if arguments.get("do_train"):
            # a killed run resumes from its last checkpoint; one that never reached a checkpoint starts over
            checkpoint = last_complete_checkpoint(output_dir)
            arguments.update({"resume_from_checkpoint": checkpoint} if checkpoint else {"overwrite_output_dir": True})
        run_script("clm", arguments, output_dir, run.id, **limits)
        return collect(output_dir, arguments)

    def is_complete(self, run: Run) -> bool:
        """A train run's model is there too: a clone carries the results JSONs of the runs behind the docs, not
        their models, so there they run again when a later experiment needs them."""
        return (Path(run.arguments["output_dir"]) / "config.json").exists()

    def summary(self, results: list[Result]) -> list[str]:
        """Validation (and test) perplexity and the change against the baseline run (BASELINE_FUSION) that differs
        only in `fusion`."""

        def besides_fusion(result: Result) -> str:
            return json.dumps({k: v for k, v in result.values.items() if k != "fusion"}, sort_keys=True)

        reference = {besides_fusion(r): r for r in results if r.values.get("fusion") == BASELINE_FUSION}
        rows = [("run", "validation perplexity", f"vs {BASELINE_FUSION}", "test perplexity", "without e_j")]
        for result in results:
            ppl = result.best_eval_perplexity
            none = reference.get(besides_fusion(result))
            test = result.metrics.get("test_perplexity")
            zeroed = result.metrics.get("eval_without_fusion_perplexity")
            rows.append((result.run, f"{ppl:.2f}", change(ppl, none.best_eval_perplexity) if none and none is not result
                         else "",
                         f"{test:.2f}" if test else "", f"{zeroed:.2f}" if zeroed else ""))
        kept = [i for i in range(len(rows[0])) if any(row[i] for row in rows[1:])]  # no column left empty
        return plain_table([tuple(row[i] for i in kept) for row in rows]) + seeds_verdict(results)


def seeds_verdict(results: list[Result]) -> list[str]:
    """Where each fusion ran with several seeds (and nothing else varies): each fusion's mean against none's, and
    whether the difference is larger than the seeds' spread (the largest gap between two seeds of one fusion)."""
    by_fusion = defaultdict(list)
    for result in results:
        if set(result.values) <= {"fusion", "seed"}:
            by_fusion[result.values["fusion"]].append(result.best_eval_perplexity)
    none = by_fusion.get(BASELINE_FUSION, [])
    lines = []
    for fusion, values in by_fusion.items():
        if fusion == BASELINE_FUSION or len(values) < 2 or len(none) < 2:
            continue
        gap = abs(statistics.mean(values) - statistics.mean(none))
        spread = max(max(values) - min(values), max(none) - min(none))
        verdict = (f"{gap / spread:.1f}× the largest gap between two seeds of one variant ({spread:.1f}): larger "
                   "than seed-to-seed variation" if gap > 2 * spread else "not twice the largest gap between two "
                   f"seeds of one variant ({spread:.1f}): these seeds show no clear difference")
        lines.append(f"{fusion} vs {BASELINE_FUSION} over {len(values)} and {len(none)} seeds: "
                     f"{statistics.mean(values):.1f} against {statistics.mean(none):.1f} "
                     f"({change(statistics.mean(values), statistics.mean(none))}), a gap of {gap:.1f}, {verdict}.")
    return [""] + lines if lines else []


class EvaluateRuns(TrainRuns):
    """run_clm.py evaluations of another experiment's models on fixed samples of other files."""

    def runs(self, scale: Scale) -> list[Run]:
        runs = []
        for values, model_dir in source_models(scale):
            for spec in scale.setting["files"]:
                sample = sample_file(spec["file"], spec["sentences"], spec.get("seed", 0), scale.folder / "data")
                run_values = {**values, "domain": spec["domain"]}
                run_id = run_name(run_values)
                arguments = {**scale.base, "model_name_or_path": str(model_dir), "validation_file": str(sample),
                             "output_dir": str(scale.folder / "runs" / run_id), "do_train": False, "do_eval": True,
                             "do_predict": False, "fusion": None, "config_overrides": None, "train_file": None,
                             "test_file": None, "max_train_samples": None, "max_eval_samples": None}
                runs.append(Run(run_id, run_values, arguments))
        return runs

    def execute(self, run: Run, overrides: dict | None) -> dict:
        require_model(run)
        return super().execute(run, overrides)

    def is_complete(self, run: Run) -> bool:
        return True


SMOKE_TEST_WORDS = 300  # --smoke_test scores the first words of a reading-time corpus


class SurprisalRuns:
    """run_surprisal.py with another experiment's models on a reading-time corpus; under --smoke_test, on its first
    SMOKE_TEST_WORDS words."""

    def runs(self, scale: Scale) -> list[Run]:
        runs = []
        for values, model_dir in source_models(scale):
            # each model reads as many previous sentences as it was trained with; with "also_without_context", a
            # model trained with some is scored again reading none (is its gain the story's, or its training's?)
            readings = [values] + ([{**values, "scored_context_sentences": 0}] if (
                scale.setting.get("also_without_context") and values.get("context_sentences")) else [])
            for reading in readings:
                run_id = run_name(reading)
                arguments = {"model_name_or_path": str(model_dir), "input_file": scale.setting["input_file"],
                             "reading_times": scale.setting["input_file"],
                             "batch_size": scale.setting.get("batch_size", 32),
                             "output_file": str(scale.folder / "runs" / run_id / "surprisal.tsv"),
                             **({"document_column": scale.setting["document_column"]}
                                if "document_column" in scale.setting else {}),
                             **({"context_sentences": reading["scored_context_sentences"]}
                                if "scored_context_sentences" in reading else {})}
                runs.append(Run(run_id, reading, arguments))
        return runs

    def execute(self, run: Run, overrides: dict | None) -> dict:
        require_model(run)
        output_file = Path(run.arguments["output_file"])
        arguments = dict(run.arguments)
        if overrides:  # a smoke test: the corpus's first rows, the same file for the words and their times
            lines = text_lines(Path(arguments["input_file"]).read_text(encoding="utf-8"))[: SMOKE_TEST_WORDS + 1]
            sample = output_file.parent / "smoke-input.tsv"
            sample.parent.mkdir(parents=True, exist_ok=True)
            sample.write_text("\n".join(lines) + "\n", encoding="utf-8")
            arguments.update(input_file=str(sample), reading_times=str(sample))
        run_script("surprisal", arguments, output_file.parent, run.id)
        # the run scores one model: its entry of the comparison
        (metrics,) = json.loads(output_file.with_suffix(".reading_times.json").read_text())["models"].values()
        return {"metrics": metrics, "arguments": run.arguments}

    def is_complete(self, run: Run) -> bool:
        return True

    def summary(self, results: list[Result]) -> list[str]:
        header = ("run", "Pearson r", "Spearman rho", "ΔLL held out (nats/word) [95 %]", "ΔLL in-sample")
        return plain_table([header] + [
            (r.run, f"{r.metrics['pearson_r']:.4f}", f"{r.metrics['spearman_rho']:.4f}",
             held_out_text(r.metrics), f"{r.metrics['delta_log_likelihood']:.5f}") for r in results])


class SimilarityRuns:
    """The prefix-embedding similarity over the scale's validation sentences (with the scale's tokenizer and
    precision, so the training runs' cache serves it), one run per `each` item (pooling)."""

    shared = ("validation_file", "max_eval_samples", "max_seq_length", "bf16", "tokenizer_name")

    def runs(self, scale: Scale) -> list[Run]:
        base = with_shared_tokenizer(scale)
        return [Run(run_name(values), values, {**{k: base.get(k) for k in self.shared}, **values})
                for values in scale.setting.get("each", [{}])]

    def execute(self, run: Run, overrides: dict | None) -> dict:
        from .similarity import prefix_similarity

        arguments = dict(run.arguments)
        if overrides:  # a smoke test: as few sentences as the training runs evaluate
            arguments["max_eval_samples"] = min(arguments.get("max_eval_samples") or overrides["max_eval_samples"],
                                                overrides["max_eval_samples"])
        return {"metrics": prefix_similarity(**arguments), "arguments": arguments}

    def is_complete(self, run: Run) -> bool:
        return True

    def summary(self, results: list[Result]) -> list[str]:
        from .similarity import similarity_rows

        return plain_table(similarity_rows(results))


# The kinds of run an experiment JSON may name
RUN_KINDS: dict[str, RunKind] = {"train": TrainRuns(), "evaluate": EvaluateRuns(), "surprisal": SurprisalRuns(),
                                 "similarity": SimilarityRuns()}


@dataclass
class Experiment:
    name: str
    scale: str
    description: str
    kind: str
    spec: dict = field(default_factory=dict)  # the whole experiment JSON (its report prose, endpoints, …)
    runs: list[Run] = field(default_factory=list)

    @property
    def run_kind(self) -> RunKind:
        return RUN_KINDS[self.kind]


def experiment_names() -> list[str]:
    """The experiments shipped in configuration/experiments/."""
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.json") if p.stem not in NOT_EXPERIMENTS)


def experiment_kind(spec: dict) -> str:
    """An experiment's kind (a key of RUN_KINDS) from its spec: train unless it says otherwise."""
    return spec.get("kind", "train")


def experiment_kinds() -> dict[str, str]:
    """Each shipped experiment's kind."""
    return {name: experiment_kind(load_spec(name)) for name in experiment_names()}


def experiments_help(results_dir: Path = ROOT / "results") -> str:
    """Each shipped experiment on a line of its own with its JSON's `summary` and, where the repository's record
    holds its runs, how long they took at each scale (their wall times summed), for reproduce.py --help."""
    names = experiment_names()
    width = max(map(len, names))
    lines = []
    for name in names:
        took = []
        for scale in SCALES:
            seconds = sum(json.loads(p.read_text()).get("wall_seconds") or 0
                          for p in (results_dir / scale / name).glob("*.json"))
            if seconds:
                took.append(f"{scale} {seconds / 60:.0f} min" if seconds < 5400 else f"{scale} {seconds / 3600:.1f} h")
        timing = f" (measured: {', '.join(took)})" if took else ""
        lines.append(f"  {name:<{width}}  {load_spec(name).get('summary', '')}{timing}")
    return "\n".join(lines)


def experiment_file(name: str) -> Path:
    """An experiment by name (configuration/experiments/<name>.json) or by path."""
    path = Path(name)
    if path.suffix == ".json":
        return path
    path = EXPERIMENTS_DIR / f"{name}.json"
    if not path.is_file() or name in NOT_EXPERIMENTS:
        raise ValueError(f"Unknown experiment {name!r}; the experiments are: {', '.join(experiment_names())} (or a "
                         "JSON file).")
    return path


def load_spec(name: str) -> dict:
    return read_json_object(experiment_file(name), "experiment", fields=("scales",))


def load_experiment(name: str, scale: str, results_dir: Path, precision: str | None = None,
                    data_dir: str | Path | None = None, encoder: str | None = None) -> Experiment:
    """The experiment's runs at `scale`; `precision` (fp32 or bf16) replaces the configs' own for every run that
    reads run_clm arguments; `data_dir` is read wherever the configs name SHARED_DATA (a copy of the data on another
    machine); `encoder` (a folder) is the encoder of every new model instead of the packaged MiniLM."""
    spec = load_spec(name)
    name = experiment_file(name).stem
    kind = experiment_kind(spec)
    if kind not in RUN_KINDS:
        raise ValueError(f"Experiment {name} has kind {kind!r}; the kinds are: {', '.join(RUN_KINDS)}.")
    if scale not in spec.get("scales", {}):
        raise ValueError(f"Experiment {name} has no scale {scale!r}; it has: {', '.join(spec.get('scales', {}))}.")
    scales = read_json_object(spec.get("scales_file", EXPERIMENTS_DIR / "scales.json"), "scales file")
    setting = relocated(spec["scales"][scale], data_dir)
    # the BPE all runs of the scale share, unless the experiment says "tokenizer": null (the encoder's vocabulary)
    tokenizer = setting["tokenizer"] if "tokenizer" in setting else relocated(scales[scale].get("tokenizer"), data_dir)
    base = {**relocated(scales[scale]["run"], data_dir), **setting.get("run", {}),
            **(precision_arguments(precision) if precision else {}),
            **({"encoder_name_or_path": str(encoder)} if encoder else {})}
    where = Scale(scale, setting, base, tokenizer, results_dir / scale / name, results_dir / scale)
    experiment = Experiment(name, scale, spec.get("description", ""), kind, spec)
    experiment.runs = experiment.run_kind.runs(where)
    return experiment


def shared_data_path(value) -> str | None:
    """A config value's path below SHARED_DATA (None: the value is no such path)."""
    if isinstance(value, str) and (value == SHARED_DATA or value.startswith(SHARED_DATA + "/")):
        return value[len(SHARED_DATA) + 1:]
    return None


def map_config(value, function):
    """`value` (a config: dicts, lists, strings, numbers) with `function` applied to every value that is not a dict
    or a list."""
    if isinstance(value, dict):
        return {k: map_config(v, function) for k, v in value.items()}
    if isinstance(value, list):
        return [map_config(v, function) for v in value]
    return function(value)


def relocated(value, data_dir: str | Path | None):
    """`value` (a config) with every path under SHARED_DATA read from `data_dir` instead."""
    if data_dir is None:
        return value
    return map_config(value, lambda v: v if shared_data_path(v) is None else str(Path(data_dir) / shared_data_path(v)))


def expand(setting: dict) -> list[dict]:
    """The varying arguments of each run of a train experiment at one scale: the grid's combinations, each combined
    with every item of `each`, then the `extra` runs."""
    grid = setting.get("grid", {})
    if not grid and "each" not in setting:
        return list(setting.get("extra", []))  # only the runs listed one by one
    combinations = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    varied = [{**combination, **each} for combination in combinations for each in setting.get("each", [{}])]
    return varied + setting.get("extra", [])


# run values that are model config fields, not run_clm arguments: they join the run's config_overrides
CONFIG_VALUES = ("tie_word_embeddings", "dropout", "fusion_dropout")


def with_config_values(arguments: dict) -> dict:
    """`arguments` with the CONFIG_VALUES among them moved into config_overrides (after the scale's sizes)."""
    fields = {key: arguments.pop(key) for key in CONFIG_VALUES if key in arguments}
    if fields:
        extra = [f"{key}={str(value).lower() if isinstance(value, bool) else value}" for key, value in fields.items()]
        arguments["config_overrides"] = ",".join(filter(None, [arguments.get("config_overrides"), *extra]))
    return arguments


# run values that with_evaluation_steps turns into the Trainer's evaluation and early-stopping arguments
EVALUATION_VALUES = ("evaluate_every_steps", "early_stopping_epochs")


@functools.cache
def training_sentences(path: str) -> int:
    return sum(1 for s in read_sentences(path) if s.strip())


def steps_per_epoch(sentences: int, arguments: dict) -> int:
    """The optimizer steps of one epoch over `sentences` with these run_clm arguments (batch, gradient accumulation)."""
    batch = arguments.get("per_device_train_batch_size", 8) * arguments.get("gradient_accumulation_steps", 1)
    return math.ceil(sentences / batch)


def with_evaluation_steps(arguments: dict) -> dict:
    """`arguments` with `evaluate_every_steps` (s) turned into the Trainer's steps: k = ceil(steps per epoch / s)
    evaluations per epoch, at least one, evenly spaced so that one falls at each epoch's end; the run saves (the best
    model is kept) and logs at each. A V-shaped validation curve is so read near its minimum whatever the training
    set's size. `early_stopping_epochs` (e) becomes a patience of e × k evaluations. Steps per epoch come from
    max_train_samples (or the training file's sentences), the batch size and gradient accumulation."""
    arguments = dict(arguments)
    every = arguments.pop("evaluate_every_steps", None)
    patience_epochs = arguments.pop("early_stopping_epochs", None)
    for name, value in (("evaluate_every_steps", every), ("early_stopping_epochs", patience_epochs)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} {value!r}: use a whole number, at least 1.")
    if every is None:
        if patience_epochs is not None:
            raise ValueError("early_stopping_epochs counts the evaluations of evaluate_every_steps: give both.")
        return arguments
    sentences = training_sentences(arguments["train_file"])
    per_epoch_steps = steps_per_epoch(min(sentences, arguments.get("max_train_samples") or sentences), arguments)
    per_epoch = math.ceil(per_epoch_steps / every)
    steps = math.ceil(per_epoch_steps / per_epoch)
    patience = {"early_stopping_patience": patience_epochs * per_epoch} if patience_epochs else {}
    return {**arguments, "eval_strategy": "steps", "save_strategy": "steps", "eval_steps": steps, "save_steps": steps,
            "logging_steps": steps, **patience}


def run_name(values: dict) -> str:
    parts = [str(values["fusion"])] if "fusion" in values else []
    for key, value in values.items():
        if key != "fusion" and ID_NAMES.get(key, key) is not None:
            parts.append(ID_NAMES.get(key, key) if value is True else f"{ID_NAMES.get(key, key)}{value}")
    return "_".join(parts) or "run"


def with_shared_tokenizer(scale: Scale) -> dict:
    """The scale's base arguments with its shared tokenizer (built once) as tokenizer_name."""
    if not scale.tokenizer:
        return dict(scale.base)
    return {**scale.base, "tokenizer_name": str(shared_tokenizer(scale.tokenizer, scale.scale_dir))}


def shared_tokenizer(spec: dict, scale_dir: Path) -> Path:
    """The BPE that every run of a scale shares (so their embedding caches are shared too), built once from
    `spec["train_file"]` with `spec["vocab_size"]` tokens."""
    folder = scale_dir / f"tokenizer-bpe{spec['vocab_size']}"
    if not (folder / "tokenizer.json").exists():
        sentences = [s for s in read_sentences(spec["train_file"]) if s.strip()]
        build_bpe_tokenizer(sentences, spec["vocab_size"]).save_pretrained(folder)
    return folder


def sample_file(path: str, count: int, seed: int, folder: Path) -> Path:
    """A fixed random sample of `count` non-empty lines of `path` (seeded), written once into `folder`."""
    out = folder / f"{Path(path).stem}-{count}-seed{seed}.txt"
    if not out.exists():
        lines = [s for s in read_sentences(path) if s.strip()]
        picked = sorted(random.Random(seed).sample(range(len(lines)), min(count, len(lines))))
        folder.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(lines[i] + "\n" for i in picked), encoding="utf-8")
    return out


def source_models(scale: Scale) -> list[tuple[dict, Path]]:
    """The models that another experiment's runs train (those whose values match `models.where`): (the run's
    values, its output folder)."""
    models = scale.setting["models"]
    source = experiment_file(models["experiment"])
    trained = expand(json.loads(source.read_text(encoding="utf-8"))["scales"][scale.name])
    where = models.get("where", {})
    return [(values, scale.scale_dir / source.stem / "runs" / run_name(values)) for values in trained
            if all(values.get(k) in allowed for k, allowed in where.items())]


def require_model(run: Run):
    model = run.arguments["model_name_or_path"]
    if not Path(model).is_dir():
        raise FileNotFoundError(f"{run.id} uses the model {model}, which does not exist: run the experiment that "
                                "trains it first (python reproduce.py <experiment> --scale ...).")


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """transformers' latest checkpoint of output_dir, once a checkpoint whose save was cut short is gone (the
    Trainer writes trainer_state.json last: without it the checkpoint cannot be resumed)."""
    while output_dir.is_dir() and (checkpoint := get_last_checkpoint(str(output_dir))):
        if (Path(checkpoint) / "trainer_state.json").exists():
            return checkpoint
        logger.info("%s was not saved to the end: removed, resuming from the one before", checkpoint)
        shutil.rmtree(checkpoint)
    return None


# the scripts' library parts, run as modules in a fresh process: each run's memory and threads end with it
ENTRY_POINTS = {"clm": "fusion_lstm_training.clm", "surprisal": "fusion_lstm_surprisal.score"}


class RunTimeout(RuntimeError):
    """A run stopped because it ran past its time."""


# the scripts running with a timeout, each in its own process group (stop_running ends them); STOPPING: set by
# stop_running, so that a script that starts in the moment after is ended too (run_lease clears it)
RUNNING: set[subprocess.Popen] = set()
STOPPING = threading.Event()


def stop_running():
    """Ends every script started with a timeout that is still running, with whatever it started, and every one that
    starts after, until STOPPING is cleared."""
    STOPPING.set()
    for process in list(RUNNING):
        kill_group(process)


def kill_group(process: subprocess.Popen):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def run_script(script: str, arguments: dict, output_dir: Path, run_id: str, timeout: float | None = None,
               log: Path | None = None):
    """Runs a script on `arguments` (saved as output_dir/arguments.json) in its own process; one still running after
    `timeout` seconds is stopped (RunTimeout); `log`: a file for its output instead of the terminal."""
    output_dir.mkdir(parents=True, exist_ok=True)
    config_file = output_dir / "arguments.json"
    config_file.write_text(json.dumps(arguments, indent=2))
    if script == "clm":
        flags = [str(config_file)]
    else:
        flags = [item for k, v in arguments.items() for item in (f"--{k}", str(v))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with open(log, "w", encoding="utf-8") if log else contextlib.nullcontext() as output:
        # its own process group, so that a stop reaches whatever the script started
        process = subprocess.Popen([sys.executable, "-m", ENTRY_POINTS[script], *flags], cwd=ROOT, env=env,
                                   stdout=output, stderr=subprocess.STDOUT if output else None,
                                   start_new_session=timeout is not None)
        if timeout is not None:
            RUNNING.add(process)
            if STOPPING.is_set():  # stop_running came between the start and the line above
                kill_group(process)
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(process)
            process.wait()
            raise RunTimeout(f"run {run_id} was stopped after {timeout:.0f} s, unfinished.") from None
        finally:
            RUNNING.discard(process)
    if returncode != 0:
        where = f"; its output is in {log}" if log else ""
        raise RuntimeError(f"run {run_id} failed (exit {returncode}); its arguments are in {config_file}{where}. "
                           "Rerun the same command to retry it; finished runs are kept.")


def collect(output_dir: Path, arguments: dict) -> dict:
    """A run_clm.py run's results from what it left in output_dir: metrics, the dev curve, the best dev value."""
    metrics = json.loads((output_dir / "all_results.json").read_text())
    state_file = output_dir / "trainer_state.json"
    history = json.loads(state_file.read_text())["log_history"] if state_file.exists() else []
    curve = [{"epoch": h["epoch"], "eval_loss": h["eval_loss"], "eval_perplexity": h["eval_perplexity"]}
             for h in history if "eval_loss" in h]
    # the training loss the Trainer logged (mean over each logging interval): does a run fit its training set better
    # while it does worse on dev?
    train_curve = [{"epoch": h["epoch"], "loss": h["loss"]} for h in history if "loss" in h]
    best = min(curve, key=lambda h: h["eval_perplexity"]) if curve else None  # the lowest the docs promise
    best_perplexity = best["eval_perplexity"] if best else metrics.get("eval_perplexity")
    return {"metrics": metrics, "eval_curve": curve, "train_curve": train_curve, "best_eval_perplexity": best_perplexity,
            "arguments": {k: v for k, v in arguments.items() if v is not None}}


def result_path(results_dir: Path, experiment: Experiment, run: Run) -> Path:
    return results_dir / experiment.scale / experiment.name / f"{run.id}.json"


def is_finished(results_dir: Path, experiment: Experiment, run: Run) -> bool:
    """Whether `run` has its results JSON and whatever else its kind needs (is_complete): nothing to run again."""
    return result_path(results_dir, experiment, run).exists() and experiment.run_kind.is_complete(run)


class RunLocked(RuntimeError):
    """Another process is running this run (its lock file says which)."""


@contextlib.contextmanager
def run_lock(path: Path):
    """Holds `path`'s lock for one run while it runs, or raises RunLocked naming the process that holds it. The lock
    is the kernel's (flock): it ends with its process, so a killed run leaves no stale lock behind."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunLocked(f"being run by {holder} (lock {path})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {platform.node()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def lock_path(results_dir: Path, experiment: Experiment, run: Run) -> Path:
    return results_dir / experiment.scale / experiment.name / "runs" / f"{run.id}.lock"


def execute(experiment: Experiment, run: Run, results_dir: Path, overrides: dict | None = None, **limits) -> dict:
    """Runs `run` as its kind does and writes its results JSON, holding the run's lock (two processes on one results
    folder never run, resume or clean up one run at once: the second gets RunLocked); `limits` (a train run's timeout
    and log) go to run_script."""
    with run_lock(lock_path(results_dir, experiment, run)):
        if is_finished(results_dir, experiment, run):  # by another process meanwhile
            return read_json_object(result_path(results_dir, experiment, run), "results file", RESULT_FIELDS)
        started = time.time()
        outcome = experiment.run_kind.execute(run, overrides, **limits)
        return write_result(results_dir, experiment, run, record(experiment, run, seconds=time.time() - started,
                                                                 **outcome))


def write_result(results_dir: Path, experiment: Experiment, run: Run, result: dict) -> dict:
    path = result_path(results_dir, experiment, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(result, indent=2))
    os.replace(partial, path)
    return result


def record(experiment: Experiment, run: Run, metrics: dict, arguments: dict, seconds: float, **extra) -> dict:
    """The results JSON of a run of any kind: what ran, its metrics (and `extra`), how long, on what machine."""
    return {"experiment": experiment.name, "scale": experiment.scale, "run": run.id, "values": run.values,
            "metrics": metrics, **extra, "arguments": arguments, "precision": "bf16" if arguments.get("bf16") else "fp32",
            "wall_seconds": seconds, "machine": machine(), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "cpu": cpu_description(), "gpu": gpu_name()}


def gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def check_run_ids(experiment: Experiment, only: list[str]):
    """`only` names runs of the experiment, or is refused listing its runs (before anything runs or is measured)."""
    unknown = sorted(set(only) - {run.id for run in experiment.runs})
    if unknown:
        raise ValueError(f"{experiment.name} has no runs {unknown} at {experiment.scale} scale; its runs are: "
                         f"{', '.join(run.id for run in experiment.runs)}.")


def run_experiment(name: str, scale: str, results_dir: str | Path, overrides: dict | None = None,
                   progress=print, precision: str | None = None, data_dir: str | Path | None = None,
                   encoder: str | None = None, only: list[str] | None = None) -> list[dict]:
    """Every run of the experiment (`only`: of these run ids) that has no results JSON yet; returns all their results,
    old and new."""
    results_dir = Path(results_dir)
    experiment = load_experiment(name, scale, results_dir, precision, data_dir, encoder)
    if only is not None:
        check_run_ids(experiment, only)
        experiment.runs = [run for run in experiment.runs if run.id in only]
    results = []
    for number, run in enumerate(experiment.runs, 1):
        if is_finished(results_dir, experiment, run):
            progress(f"[{number}/{len(experiment.runs)}] {experiment.name}/{run.id}: done before, skipped")
            results.append(read_json_object(result_path(results_dir, experiment, run), "results file", RESULT_FIELDS))
            continue
        progress(f"[{number}/{len(experiment.runs)}] {experiment.name}/{run.id}: running ({run.values})")
        try:
            result = execute(experiment, run, results_dir, overrides)
        except RunLocked as held:
            progress(f"[{number}/{len(experiment.runs)}] {experiment.name}/{run.id}: {held}: skipped here")
            continue
        ppl = result.get("best_eval_perplexity")  # the number the tables show
        outcome = f"best validation perplexity {ppl:.2f}" if ppl is not None else "done"
        progress(f"[{number}/{len(experiment.runs)}] {experiment.name}/{run.id}: {outcome}, "
                 f"{result['wall_seconds']:.0f} s")
        results.append(result)
    return results


def summary(experiment: str, results: list[dict]) -> list[str]:
    """The terminal table of an experiment's results (run_experiment's), as its kind prints it."""
    return RUN_KINDS[experiment_kind(load_spec(experiment))].summary([Result.of(r) for r in results])
