"""The results JSONs as the report reads them: found per scale and experiment, grouped, and the budget line that says
how a set of runs was trained."""

import json
import math
from collections import defaultdict
from pathlib import Path

from fusion_lstm_training.precision import cpu_text
from modeling_fusion_lstm import BASELINE_FUSION, PAPER_FUSION

from .experiments import SCALES, experiment_kinds, steps_per_epoch
from .records import Result


def standard_perplexity(paper_value: float) -> float:
    """The paper's 'perplexity' is 2 ** (mean cross-entropy in nats); the standard one is exp of that mean."""
    return math.exp(math.log2(paper_value))


def load_results(results_dir: Path) -> dict[tuple[str, str], list[Result]]:
    """(scale, experiment) → its results, from results_dir/<scale>/<experiment>/*.json, each checked
    (Result.read); two files of one run (the same values) are refused, naming both."""
    kinds = experiment_kinds()
    found = defaultdict(list)
    seen = {}
    for scale in SCALES:
        for path in sorted(Path(results_dir).glob(f"{scale}/*/*.json")):
            if path.parent.name.startswith("tokenizer-"):  # the shared tokenizer's files
                continue
            result = Result.read(path, kinds)
            key = (result.scale, result.experiment, json.dumps(result.values, sort_keys=True))
            if key in seen:
                raise ValueError(f"{path} and {seen[key]} hold the same run ({result.values}): keep one.")
            seen[key] = path
            found[(result.scale, result.experiment)].append(result)
    return found


def by_fusion(results: list[Result], metric) -> dict[str, list[float]]:
    grouped = defaultdict(list)
    for result in results:
        value = metric(result)
        if value is not None:
            grouped[result.values["fusion"]].append(value)
    return grouped


# how the Trainer ordered the training sentences into batches (train_sampling_strategy), in the budget's words
BATCH_ORDER = {"group_by_length": "batches grouped by length", "random": "batches in random order"}


def epochs_text(results: list[Result]) -> str:
    """The epochs of the budget: as configured, or with early stopping the most and the range the runs trained."""
    args = results[0].arguments
    if not args.get("early_stopping_patience"):
        return f"{args.get('num_train_epochs')} epochs"
    trained = [r.metrics["train_epochs"] for r in results if r.metrics.get("train_epochs") is not None]
    ran = (f", trained {min(trained):g}" + (f"–{max(trained):g}" if max(trained) != min(trained) else "")) if (
        trained) else ""
    window = f"{args['early_stopping_patience']} evaluations"
    samples = results[0].metrics.get("train_samples")
    if args.get("eval_strategy") == "steps" and samples:  # evaluations within epochs: the patience in epochs too
        epochs = args["early_stopping_patience"] * args["eval_steps"] / steps_per_epoch(samples, args)
        window += f" ({epochs:.1f} epochs)"
    return (f"at most {args.get('num_train_epochs')} epochs, stopped once the validation loss had not improved for "
            f"{window}{ran}")


def device_text(machine: dict) -> str:
    """What a result ran on, from its `machine` record: the GPU, or the CPU with its vector flags and any cap on the
    instruction sets (results recorded before the CPU's description: its core count and processor)."""
    if machine.get("gpu"):
        return machine["gpu"]
    if machine.get("cpu"):
        return cpu_text(machine["cpu"])
    return f"{machine.get('cpus', '?')}-core CPU ({machine.get('processor', '?')})"


def budget(results: list[Result]) -> str:
    args = results[0].arguments
    device = device_text(results[0].machine)
    order = BATCH_ORDER.get(args.get("train_sampling_strategy"))
    return (f"{results[0].metrics.get('train_samples', '?')} training sentences, {epochs_text(results)}, "
            f"batch {args.get('per_device_train_batch_size')}{f' ({order})' if order else ''}, "
            f"lr {args.get('learning_rate')}, "
            f"sizes `{args.get('config_overrides')}`, max {args.get('max_seq_length')} tokens, "
            f"{'bfloat16' if args.get('bf16') else 'float32'}; validation/test: "
            f"{'the first ' + str(args['max_eval_samples']) if args.get('max_eval_samples') else 'all'} sentences; "
            f"on {device}")


def is_plain(values: dict, fusion: str = BASELINE_FUSION) -> bool:
    """A sentence-level run of `fusion` with nothing else changed (only its seed varies): what other runs are compared
    with (none by default, whose surprisal every model's is compared with)."""
    return values["fusion"] == fusion and set(values) <= {"fusion", "seed"}


def seed_groups(results: list[Result]) -> list[list[Result]]:
    """The runs that differ only in their seed, for each run trained with more than one, in the order of the seeds."""
    groups = defaultdict(list)
    for r in results:
        groups[tuple(sorted((k, str(v)) for k, v in r.values.items() if k != "seed"))].append(r)
    return [sorted(g, key=lambda r: r.values["seed"]) for g in groups.values() if len(g) > 1]


def paper_change(paper: dict) -> float | None:
    """The paper's change of concat against none, in % of standard perplexity."""
    table = paper["fusion_table"]
    if BASELINE_FUSION not in table or PAPER_FUSION not in table:
        return None
    return (standard_perplexity(table[PAPER_FUSION]) / standard_perplexity(table[BASELINE_FUSION]) - 1) * 100
