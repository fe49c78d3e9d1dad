"""A run's results JSON as one typed, checked record (`Result`): what the runner writes and every reader of results
(the report's sections, the terminal summaries) reads."""

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from fusion_lstm_data.files import read_json_object


# what every results JSON holds (the report and the runner read them)
RESULT_FIELDS = ("experiment", "scale", "run", "values", "metrics")


@dataclass(frozen=True)
class Result:
    """One run's results JSON (results/<scale>/<experiment>/<run>.json), read and checked once; every section reads
    these fields. `best_eval_perplexity` is None for runs that train nothing (evaluations, surprisal)."""

    path: Path
    experiment: str
    scale: str
    run: str
    values: dict
    metrics: dict
    arguments: dict = field(default_factory=dict)
    best_eval_perplexity: float | None = None
    eval_curve: list = field(default_factory=list)
    train_curve: list = field(default_factory=list)
    machine: dict = field(default_factory=dict)
    wall_seconds: float | None = None

    @classmethod
    def of(cls, record: dict, path: Path = Path("<memory>")) -> "Result":
        known = {f.name for f in fields(cls)} - {"path"}
        return cls(path=Path(path), **{k: v for k, v in record.items() if k in known})

    @classmethod
    def read(cls, path: Path, kinds: dict[str, str]) -> "Result":
        """The results JSON at `path`, checked (`checked`); `kinds`: each known experiment's kind
        (experiments.experiment_kinds)."""
        return cls.checked(read_json_object(path, "results file", RESULT_FIELDS), path, kinds)

    @classmethod
    def checked(cls, record: dict, path: Path, kinds: dict[str, str]) -> "Result":
        """`record` (a results JSON object, to lie at `path`), refused (naming the file) unless its run, experiment
        and scale are the ones its path says, the experiment is known, a training run has its best_eval_perplexity,
        and every number in it is finite."""
        where = {"run": path.stem, "experiment": path.parent.name, "scale": path.parent.parent.name}
        wrong = [f"{key} {record[key]!r} (its path says {value!r})" for key, value in where.items()
                 if record[key] != value]
        if wrong:
            raise ValueError(f"{path}: the results file does not belong where it lies: {'; '.join(wrong)}. A copy or "
                             "a file moved by hand? Remove it or put it back where it came from.")
        if record["experiment"] not in kinds:
            raise ValueError(f"{path}: unknown experiment {record['experiment']!r} (the experiments are "
                             f"{', '.join(sorted(kinds))}): remove the file or add its experiment.")
        if kinds[record["experiment"]] == "train" and record.get("best_eval_perplexity") is None:
            raise ValueError(f"{path}: a training run's results without best_eval_perplexity: the run did not finish "
                             "its evaluations (or the file was cut): rerun it.")
        bad = [name for name, value in numbers(record) if not math.isfinite(value)]
        if bad:
            raise ValueError(f"{path}: not a finite number: {', '.join(bad[:5])}. The run's results are broken: rerun it.")
        return cls.of(record, path)


def numbers(value, name: str = "") -> list[tuple[str, float]]:
    """Every number inside a JSON value, with where it is (metrics.eval_loss, eval_curve[2].eval_perplexity)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [(name, float(value))]
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in numbers(item, f"{name}.{key}" if name else key)]
    if isinstance(value, list):
        return [found for i, item in enumerate(value) for found in numbers(item, f"{name}[{i}]")]
    return []
