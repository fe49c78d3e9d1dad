"""The learning curve's numbers (experiment learning_curve): each variant's converged dev perplexity against the
number of training sentences, over seeds, and the gain of fusion at convergence beside the gain at a fixed budget
(after 1, 2, 3 epochs, read off the same runs' evaluations).

A variant is a run's values without its size and seed (`none`, `concat`, `concat_constant`, `none_dropout0.3`, …);
every change is against the mean over seeds, at the same size, of the variant's reference: the `none` trained the same
way (its values with fusion none and without what only a fusion has), or plain `none` where there is no such run.
"""

import statistics
from collections import defaultdict
from dataclasses import dataclass

from modeling_fusion_lstm import BASELINE_FUSION, PAPER_FUSION

from .experiments import run_name
from .records import Result
from .tables import markdown_table, percent, spread


SIZE = "max_train_samples"
# run values that place a run on the curve rather than make it another variant
PLACE = (SIZE, "seed", "evaluations_per_epoch")
BUDGET_EPOCHS = (1, 2, 3)
# an evaluation stands for epoch e when it lies this close to it (evaluations fall at whole steps)
EPOCH_TOLERANCE = 0.15
CONTROL = "concat_constant"  # concat fed one constant vector: the architecture without the embedding's content
# values that only a fused model has: its reference none is trained without them
FUSION_ONLY = ("fusion_vectors", "fusion_dropout", "fusion_context")


def variant(values: dict) -> str:
    return run_name({k: v for k, v in values.items() if k not in PLACE})


@dataclass
class Curve:
    """The runs of one experiment grouped by variant and size: runs[variant][size] = its seeds' results."""

    runs: dict[str, dict[int, list[Result]]]
    settings: dict[str, dict]  # variant → its values (without size and seed)

    @classmethod
    def of(cls, results: list[Result]) -> "Curve":
        runs, settings = defaultdict(lambda: defaultdict(list)), {}
        for result in sorted(results, key=lambda r: r.values.get("seed", 0)):
            name = variant(result.values)
            runs[name][result.values[SIZE]].append(result)
            settings[name] = {k: v for k, v in result.values.items() if k not in PLACE}
        order = sorted(runs, key=lambda v: (v != BASELINE_FUSION, v != PAPER_FUSION, v != CONTROL, v))
        return cls({v: dict(sorted(runs[v].items())) for v in order}, settings)

    def reference(self, name: str) -> str:
        """The none that `name` is compared with: trained the same way, else plain none."""
        values = {k: v for k, v in self.settings[name].items() if k not in FUSION_ONLY}
        same = run_name({**values, "fusion": BASELINE_FUSION})
        return same if same in self.runs else BASELINE_FUSION

    @property
    def variants(self) -> list[str]:
        return list(self.runs)

    @property
    def sizes(self) -> list[int]:
        return sorted({n for sizes in self.runs.values() for n in sizes})

    @property
    def compared_sizes(self) -> list[int]:
        """The sizes where both the paper's fusion and none ran: where a finding about the gain can be read."""
        return [n for n in self.sizes if self.mean(PAPER_FUSION, n) and self.mean(BASELINE_FUSION, n)]

    def values(self, name: str, size: int, metric) -> list[float]:
        """`metric` of each seed of `name` at `size` (seeds where it is None are left out)."""
        found = (metric(r) for r in self.runs.get(name, {}).get(size, []))
        return [value for value in found if value is not None]

    def mean(self, name: str, size: int, metric=None) -> float | None:
        values = self.values(name, size, metric or converged)
        return statistics.mean(values) if values else None

    def gain(self, name: str, size: int, metric=None, against: str | None = None) -> float | None:
        """The change of `name`'s mean against `against`'s (default: its reference) at `size`, in %, or None where
        either is missing."""
        value, reference = self.mean(name, size, metric), self.mean(against or self.reference(name), size, metric)
        return (value / reference - 1) * 100 if value and reference else None


def converged(result: Result) -> float:
    """The best dev perplexity over all evaluations (early stopping kept that model)."""
    return result.best_eval_perplexity


def test_perplexity(result: Result) -> float | None:
    """The test perplexity of the model kept (the best evaluation's): chosen on dev, never on test."""
    return result.metrics.get("test_perplexity")


def at_epoch(epoch: float):
    """A metric: the dev perplexity of the evaluation at `epoch` (None where the run stopped before it)."""

    def metric(result: Result) -> float | None:
        near = [c for c in result.eval_curve if abs(c["epoch"] - epoch) <= EPOCH_TOLERANCE]
        return min(near, key=lambda c: abs(c["epoch"] - epoch))["eval_perplexity"] if near else None

    return metric


def best_epoch(result: Result) -> float:
    return min(result.eval_curve, key=lambda c: c["eval_loss"])["epoch"]


def stopped_early(result: Result) -> bool:
    """Whether early stopping ended the run (not the epoch limit): then it ran to convergence."""
    return result.metrics.get("train_epochs", 0) < result.arguments.get("num_train_epochs", 0) - 1e-6


def seeds_apart(values: list[float]) -> str:
    return f"{(max(values) / min(values) - 1) * 100:.1f} %" if len(values) > 1 else "—"


def converged_lines(curve: Curve) -> list[str]:
    """A row per variant and size: its dev perplexity at convergence (mean ± sd over seeds) and how far apart its
    seeds are, its change against its reference none (and, for a fusion, against the constant-vector control), and
    the same models' test perplexity with its change."""
    has_control = CONTROL in curve.variants
    rows = [("variant", "training sentences", "dev perplexity", "seeds apart", "vs its none",
             *([f"vs `{CONTROL}`"] if has_control else []), "test perplexity", "test vs its none")]
    for name in curve.variants:
        fused = name != curve.reference(name)
        for size in curve.runs[name]:
            control = curve.gain(name, size, against=CONTROL) if fused and name != CONTROL else None
            rows.append((f"`{name}`" + (f" (vs `{curve.reference(name)}`)" if fused and curve.reference(name) != (
                BASELINE_FUSION) else ""), f"{size:,}", spread(curve.values(name, size, converged)),
                seeds_apart(curve.values(name, size, converged)), percent(curve.gain(name, size)) if fused else "—",
                *([percent(control)] if has_control else []), spread(curve.values(name, size, test_perplexity)),
                percent(curve.gain(name, size, test_perplexity)) if fused else "—"))
    return markdown_table(rows)


def budget_lines(curve: Curve) -> list[str]:
    """A row per fused variant and size: its change against none after 1, 2 and 3 epochs (the evaluations there, the
    seeds' means) beside its change at convergence, and the epochs of the best evaluations."""
    rows = [("variant", "against", "training sentences",
             *(f"after {e} epoch{'s' if e > 1 else ''}" for e in BUDGET_EPOCHS), "at convergence",
             "best epoch (its seeds)", "best epoch of the one it is against")]
    for name in curve.variants:
        if name == curve.reference(name):
            continue
        for size in curve.runs[name]:
            epochs = lambda v: ", ".join(f"{best_epoch(r):g}" for r in curve.runs.get(v, {}).get(size, []))  # noqa: E731
            rows.append((f"`{name}`", f"`{curve.reference(name)}`", f"{size:,}",
                         *(percent(curve.gain(name, size, at_epoch(e))) for e in BUDGET_EPOCHS),
                         percent(curve.gain(name, size)), epochs(name) or "—", epochs(curve.reference(name)) or "—"))
    return markdown_table(rows)


def unfinished(curve: Curve) -> list[str]:
    """The runs that the epoch limit ended instead of early stopping (not converged), by run id."""
    return [r.run for sizes in curve.runs.values() for runs in sizes.values() for r in runs if not stopped_early(r)]


def finding(curve: Curve) -> str | None:
    """One sentence per end of the curve: concat's converged change against none at the smallest and the largest size
    where both ran, with the seeds and the control; None before such a size exists."""
    sizes = curve.compared_sizes
    if not sizes:
        return None

    def said(size: int) -> str:
        seeds = min(len(curve.values(v, size, converged)) for v in (BASELINE_FUSION, PAPER_FUSION))
        control = curve.gain(PAPER_FUSION, size, against=CONTROL)
        early = curve.gain(PAPER_FUSION, size, at_epoch(1))
        apart = (f"; the seeds of `{BASELINE_FUSION}` {seeds_apart(curve.values(BASELINE_FUSION, size, converged))} "
                 "apart") if seeds > 1 else ""
        return (f"{size:,} training sentences: `{PAPER_FUSION}` {percent(curve.gain(PAPER_FUSION, size))} against "
                f"`{BASELINE_FUSION}` at convergence ({curve.mean(PAPER_FUSION, size):.1f} against "
                f"{curve.mean(BASELINE_FUSION, size):.1f}, {'mean of ' if seeds > 1 else ''}{seeds} "
                f"seed{'s' if seeds > 1 else ''} each{apart})"
                + (f", {percent(control)} against the constant-vector control" if control is not None else "")
                + (f", {percent(early)} after one epoch" if early is not None else ""))

    ends = [sizes[0]] + ([sizes[-1]] if sizes[-1] != sizes[0] else [])
    return "; ".join(said(n) for n in ends) + "."


def headline_lines(curve: Curve) -> list[str]:
    """The README's short table: per size where both ran, none and concat at convergence, concat's change against
    none, against the constant-vector control and after one epoch."""
    rows = [("training sentences", f"`{BASELINE_FUSION}`", f"`{PAPER_FUSION}`", "change at convergence",
             f"vs the control (`{CONTROL}`)", "change after 1 epoch")]
    for size in curve.compared_sizes:
        rows.append((f"{size:,}", spread(curve.values(BASELINE_FUSION, size, converged)),
                     spread(curve.values(PAPER_FUSION, size, converged)), percent(curve.gain(PAPER_FUSION, size)),
                     percent(curve.gain(PAPER_FUSION, size, against=CONTROL)),
                     percent(curve.gain(PAPER_FUSION, size, at_epoch(1)))))
    return markdown_table(rows) if len(rows) > 1 else []


def change_curves(curve: Curve) -> dict[str, dict[int, float]]:
    """For the figure: each fused variant's change against none by size, at convergence and after 1 epoch."""
    out = {}
    for name in curve.variants:
        if name == curve.reference(name):
            continue
        for label, metric in (("converged", converged), ("after 1 epoch", at_epoch(1))):
            points = {n: g for n in curve.runs[name] if (g := curve.gain(name, n, metric)) is not None}
            if points:
                out[f"{name}, {label}"] = points
    return out


__all__ = ["Curve", "budget_lines", "change_curves", "converged_lines", "finding", "headline_lines",
           "test_perplexity", "unfinished"]
