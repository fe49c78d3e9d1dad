"""The paper's experiments as data: each is a JSON file under configuration/experiments/ that expands, at a scale
(cpu or gpu), into run_clm.py runs; each finished run leaves one results JSON. Runs that already have their results
JSON are skipped, and a run killed after a checkpoint resumes from it, so a killed sweep continues where it stopped.

    configuration/experiments/scales.json   per scale: the run_clm arguments every experiment starts from, and
                                            the BPE tokenizer that all its runs share
    configuration/experiments/<name>.json   {"description", "kind": "train" | "evaluate", "scales": {scale: {
                                            "run": {...arguments...}, "grid": {arg: [values]}, "each": [{...}],
                                            "extra": [{...}], "per_fusion": {fusion: {...arguments...}}}}}

A train experiment's runs are every combination of the grid's values, each combined with every item of `each`, then
the `extra` runs. An evaluate experiment (cross_domain) evaluates the models of another experiment's runs
(`"models": {"experiment", "where"}`) on fixed samples of other files (`"files"`).
"""

import itertools
import json
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .bpe import build_bpe_tokenizer
from .data import read_sentences


ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS_DIR = ROOT / "configuration" / "experiments"
SCALES = ("cpu", "gpu")
# --smoke_test: every run for two steps on a few sentences, to check a configuration without its cost
SMOKE_TEST = {"max_steps": 2, "max_train_samples": 32, "max_eval_samples": 16, "eval_strategy": "no",
              "save_strategy": "no", "load_best_model_at_end": False, "per_device_train_batch_size": 8,
              "per_device_eval_batch_size": 8}
# how a run's varying arguments appear in its id: concat_n750_seed1, concat_subl_k0.25_seed0 ("": the value alone;
# None: not in the id)
ID_NAMES = {"max_train_samples": "n", "seed": "seed", "num_train_epochs": "ep", "domain": "on",
            "fusion_dropout_schedule": "", "fusion_dropout_mode": "", "fusion_context": "",
            "fusion_context_fraction": "k", "fusion_vectors": "", "encoder_pooling": "", "eval_without_fusion": None}


@dataclass
class Run:
    """One run_clm.py run: its id, the arguments that vary across the experiment, and all its arguments."""

    id: str
    values: dict
    arguments: dict


@dataclass
class Experiment:
    name: str
    scale: str
    description: str
    kind: str
    runs: list[Run] = field(default_factory=list)


def experiment_file(name: str) -> Path:
    """An experiment by name (configuration/experiments/<name>.json) or by path."""
    path = Path(name)
    if path.suffix == ".json":
        return path
    path = EXPERIMENTS_DIR / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.json") if p.stem not in ("scales", "paper"))
        raise ValueError(f"Unknown experiment {name!r}; the experiments are: {', '.join(known)} (or a JSON file).")
    return path


def load_experiment(name: str, scale: str, results_dir: Path) -> Experiment:
    spec = json.loads(experiment_file(name).read_text(encoding="utf-8"))
    name = experiment_file(name).stem
    if scale not in spec.get("scales", {}):
        raise ValueError(f"Experiment {name} has no scale {scale!r}; it has: {', '.join(spec.get('scales', {}))}.")
    scales = json.loads((Path(spec.get("scales_file", EXPERIMENTS_DIR / "scales.json"))).read_text(encoding="utf-8"))
    setting = spec["scales"][scale]
    base = {**scales[scale]["run"], **setting.get("run", {})}
    # the BPE all runs of the scale share, unless the experiment says "tokenizer": null (the encoder's vocabulary)
    tokenizer = setting["tokenizer"] if "tokenizer" in setting else scales[scale].get("tokenizer")
    experiment = Experiment(name, scale, spec.get("description", ""), spec.get("kind", "train"))
    folder = results_dir / scale / name
    if experiment.kind == "evaluate":
        experiment.runs = evaluation_runs(setting, base, folder, results_dir / scale)
        return experiment
    if experiment.kind == "surprisal":
        experiment.runs = surprisal_runs(setting, folder, results_dir / scale)
        return experiment
    if tokenizer:
        base["tokenizer_name"] = str(shared_tokenizer(tokenizer, results_dir / scale))
    if experiment.kind == "similarity":
        experiment.runs = similarity_runs(setting, base)
        return experiment
    for values in expand(setting):
        run_id = run_name(values)
        # "per_fusion": arguments of the runs of one fusion that do not vary within it (e.g. the MLP's sizes)
        fixed = setting.get("per_fusion", {}).get(values.get("fusion"), {})
        arguments = {**base, **fixed, **values, "output_dir": str(folder / "runs" / run_id)}
        experiment.runs.append(Run(run_id, values, arguments))
    return experiment


def expand(setting: dict) -> list[dict]:
    """The varying arguments of each run of a train experiment at one scale: the grid's combinations, each combined
    with every item of `each`, then the `extra` runs."""
    grid = setting.get("grid", {})
    combinations = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    varied = [{**combination, **each} for combination in combinations for each in setting.get("each", [{}])]
    return varied + setting.get("extra", [])


def run_name(values: dict) -> str:
    parts = [str(values["fusion"])] if "fusion" in values else []
    for key, value in values.items():
        if key != "fusion" and ID_NAMES.get(key, key) is not None:
            parts.append(f"{ID_NAMES.get(key, key)}{value}")
    return "_".join(parts) or "run"


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


def source_models(setting: dict, scale_dir: Path) -> list[tuple[dict, Path]]:
    """The models that another experiment's runs train (those whose values match `models.where`): (the run's
    values, its output folder)."""
    models = setting["models"]
    source = experiment_file(models["experiment"])
    trained = expand(json.loads(source.read_text(encoding="utf-8"))["scales"][scale_dir.name])
    where = models.get("where", {})
    return [(values, scale_dir / source.stem / "runs" / run_name(values)) for values in trained
            if all(values.get(k) in allowed for k, allowed in where.items())]


def evaluation_runs(setting: dict, base: dict, folder: Path, scale_dir: Path) -> list[Run]:
    """The models of another experiment's runs, each evaluated by run_clm.py on every file's sample."""
    runs = []
    for values, model_dir in source_models(setting, scale_dir):
        for spec in setting["files"]:
            sample = sample_file(spec["file"], spec["sentences"], spec.get("seed", 0), folder / "data")
            run_values = {**values, "domain": spec["domain"]}
            run_id = run_name(run_values)
            arguments = {**base, "model_name_or_path": str(model_dir), "validation_file": str(sample),
                         "output_dir": str(folder / "runs" / run_id), "do_train": False, "do_eval": True,
                         "do_predict": False, "fusion": None, "config_overrides": None, "train_file": None,
                         "test_file": None, "max_train_samples": None, "max_eval_samples": None}
            runs.append(Run(run_id, run_values, arguments))
    return runs


def surprisal_runs(setting: dict, folder: Path, scale_dir: Path) -> list[Run]:
    """The models of another experiment's runs, each scored by run_surprisal.py on a reading-time corpus."""
    runs = []
    for values, model_dir in source_models(setting, scale_dir):
        run_id = run_name(values)
        arguments = {"model_name_or_path": str(model_dir), "input_file": setting["input_file"],
                     "reading_times": setting["input_file"], "batch_size": setting.get("batch_size", 32),
                     "output_file": str(folder / "runs" / run_id / "surprisal.tsv")}
        runs.append(Run(run_id, values, arguments))
    return runs


def similarity_runs(setting: dict, base: dict) -> list[Run]:
    """The prefix-embedding similarity over the scale's validation sentences (with the scale's tokenizer and
    precision, so the training runs' cache serves it), one run per `each` item (pooling)."""
    shared = ("validation_file", "max_eval_samples", "max_seq_length", "bf16", "tokenizer_name")
    return [Run(run_name(values), values, {**{k: base.get(k) for k in shared}, **values})
            for values in setting.get("each", [{}])]


def result_path(results_dir: Path, experiment: Experiment, run: Run) -> Path:
    return results_dir / experiment.scale / experiment.name / f"{run.id}.json"


def latest_checkpoint(output_dir: Path) -> Path | None:
    checkpoints = [p for p in output_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(checkpoints, key=lambda p: int(p.name.split("-")[-1])) if checkpoints else None


def execute(experiment: Experiment, run: Run, results_dir: Path, overrides: dict | None = None) -> dict:
    """Runs `run` (run_clm.py, resuming from its latest checkpoint; or run_surprisal.py) and writes its results
    JSON."""
    if experiment.kind == "similarity":
        from .similarity import prefix_similarity

        started = time.time()
        metrics = prefix_similarity(**run.arguments)
        return write_result(results_dir, experiment, run,
                            record(experiment, run, metrics, run.arguments, time.time() - started))
    if experiment.kind == "surprisal":
        arguments = run.arguments  # the training overrides of --smoke_test do not apply
        output_dir = Path(arguments["output_file"]).parent
    else:
        arguments = {**run.arguments, **(overrides or {})}
        output_dir = Path(arguments["output_dir"])
    model = arguments.get("model_name_or_path")
    if experiment.kind != "train" and not Path(model).is_dir():
        raise FileNotFoundError(f"{run.id} uses the model {model}, which does not exist: run the experiment that "
                                "trains it first (python reproduce.py <experiment> --scale ...).")
    checkpoint = latest_checkpoint(output_dir) if output_dir.exists() else None
    if arguments.get("do_train"):
        # a killed run resumes from its last checkpoint; one that never reached a checkpoint starts over
        arguments.update({"resume_from_checkpoint": str(checkpoint)} if checkpoint else {"overwrite_output_dir": True})
    output_dir.mkdir(parents=True, exist_ok=True)
    config_file = output_dir / "arguments.json"
    config_file.write_text(json.dumps(arguments, indent=2))
    if experiment.kind == "surprisal":
        command = ["run_surprisal.py", *(item for k, v in arguments.items() for item in (f"--{k}", str(v)))]
    else:
        command = ["run_clm.py", str(config_file)]
    started = time.time()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.run([sys.executable, str(ROOT / command[0]), *command[1:]], cwd=ROOT, env=env)
    if process.returncode != 0:
        raise RuntimeError(f"run {run.id} of {experiment.name} failed (exit {process.returncode}); its arguments are "
                           f"in {config_file}. Rerun the same command to retry it; finished runs are kept.")
    if experiment.kind == "surprisal":
        result = collect_surprisal(experiment, run, arguments, time.time() - started)
    else:
        result = collect(experiment, run, output_dir, arguments, time.time() - started)
    return write_result(results_dir, experiment, run, result)


def write_result(results_dir: Path, experiment: Experiment, run: Run, result: dict) -> dict:
    path = result_path(results_dir, experiment, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(result, indent=2))
    os.replace(partial, path)
    return result


def collect(experiment: Experiment, run: Run, output_dir: Path, arguments: dict, seconds: float) -> dict:
    """A run's results from what run_clm.py left in output_dir: metrics, the dev curve, the best dev value."""
    metrics = json.loads((output_dir / "all_results.json").read_text())
    state_file = output_dir / "trainer_state.json"
    history = json.loads(state_file.read_text())["log_history"] if state_file.exists() else []
    curve = [{"epoch": h["epoch"], "eval_loss": h["eval_loss"], "eval_perplexity": h["eval_perplexity"]}
             for h in history if "eval_loss" in h]
    best = min(curve, key=lambda h: h["eval_loss"]) if curve else None
    best_perplexity = best["eval_perplexity"] if best else metrics.get("eval_perplexity")
    return record(experiment, run, metrics, {k: v for k, v in arguments.items() if v is not None}, seconds,
                  eval_curve=curve, best_eval_perplexity=best_perplexity)


def collect_surprisal(experiment: Experiment, run: Run, arguments: dict, seconds: float) -> dict:
    """A surprisal run's reading-time results, from what run_surprisal.py wrote beside its output TSV."""
    metrics = json.loads(Path(arguments["output_file"]).with_suffix(".reading_times.json").read_text())
    return record(experiment, run, metrics, arguments, seconds)


def record(experiment: Experiment, run: Run, metrics: dict, arguments: dict, seconds: float, **extra) -> dict:
    """The results JSON of a run of any kind: what ran, its metrics (and `extra`), how long, on what machine."""
    return {"experiment": experiment.name, "scale": experiment.scale, "run": run.id, "values": run.values,
            "metrics": metrics, **extra, "arguments": arguments, "wall_seconds": seconds, "machine": machine(),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "gpu": gpu_name()}


def gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def is_complete(experiment: Experiment, run: Run) -> bool:
    """Whether a run whose results JSON exists also left what later experiments need: a train run's model (a clone
    carries the results JSONs of the runs behind the README, not their models, so there they run again)."""
    if experiment.kind != "train":
        return True
    return (Path(run.arguments["output_dir"]) / "config.json").exists()


def run_experiment(name: str, scale: str, results_dir: str | Path, overrides: dict | None = None,
                   progress=print) -> list[dict]:
    """Every run of the experiment that has no results JSON yet; returns all its results, old and new."""
    results_dir = Path(results_dir)
    experiment = load_experiment(name, scale, results_dir)
    results = []
    for number, run in enumerate(experiment.runs, 1):
        path = result_path(results_dir, experiment, run)
        if path.exists() and is_complete(experiment, run):
            progress(f"[{number}/{len(experiment.runs)}] {experiment.name}/{run.id}: done before, skipped")
            results.append(json.loads(path.read_text()))
            continue
        progress(f"[{number}/{len(experiment.runs)}] {experiment.name}/{run.id}: running ({run.values})")
        result = execute(experiment, run, results_dir, overrides)
        ppl = result["metrics"].get("eval_perplexity")
        outcome = f"validation perplexity {ppl:.2f}" if ppl is not None else "done"
        progress(f"[{number}/{len(experiment.runs)}] {experiment.name}/{run.id}: {outcome}, "
                 f"{result['wall_seconds']:.0f} s")
        results.append(result)
    return results
