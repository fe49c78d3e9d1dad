"""Tables and figures of the paper's experiments, from the results JSONs only (no number typed in by hand): the
results section of docs/reproducing.md, the README's headline table, and PNG figures.

Each experiment's section is one function registered under the experiment's name (`@section("name")`); its prose
(title, what the paper did, what the run does) is the "report" object of the experiment's JSON, with {fields}
filled from the results. Sections appear in the order they are registered; a section whose experiment has no
results is left out.
"""

import json
import logging
import math
import os
import re
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fusion_lstm_surprisal.reading_times import compare_held_out, held_out_text
from fusion_lstm_training.data import read_json_object
from fusion_lstm_training.vectors import SOURCES
from modeling_fusion_lstm import BASELINE_FUSION, FUSIONS, FusionLSTMConfig

from .experiments import EXPERIMENTS_DIR, RESULT_FIELDS, RUN_KINDS, SCALES, load_spec
from .figures import (
    plot_changes, plot_curves, plot_fit_vs_quality, plot_learning_curve, plot_limited_data, plot_reading_times,
    plot_similarity, plot_sub_prefix,
)
from .learning_curve import (
    Curve, budget_lines, converged_lines, finding, headline_lines, unfinished,
)
from .similarity import similarity_rows
from .speed import SpeedPages
from .tables import change, markdown_table


START, END = "<!-- results:start -->", "<!-- results:end -->"
HEADLINE_START, HEADLINE_END = "<!-- headline:start -->", "<!-- headline:end -->"
logger = logging.getLogger(__name__)
SCALE_ORDER = SCALES
BASELINE = BASELINE_FUSION  # the strategy without fusion (FUSIONS' one row at stage NONE): every change is against it


def vs_baseline(value: float | None, baseline: float | None) -> str:
    """The change of `value` against the baseline's, in % (the one way a change is written), or "—" where either
    is missing."""
    return change(value, baseline) if value and baseline else "—"


def standard_perplexity(paper_value: float) -> float:
    """The paper's 'perplexity' is 2 ** (mean cross-entropy in nats); the standard one is exp of that mean."""
    return math.exp(math.log2(paper_value))


def load_results(results_dir: Path) -> dict[tuple[str, str], list[dict]]:
    """(scale, experiment) → its results, from results_dir/<scale>/<experiment>/*.json."""
    found = defaultdict(list)
    for scale in SCALE_ORDER:
        for path in sorted(Path(results_dir).glob(f"{scale}/*/*.json")):
            if path.parent.name.startswith("tokenizer-"):  # the shared tokenizer's files
                continue
            result = read_json_object(path, "results file", RESULT_FIELDS)
            found[(result["scale"], result["experiment"])].append(result)
    return found


def spread(values: list[float]) -> str:
    """'mean' or 'mean ± sd (n)' over seeds."""
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f} (n={len(values)})"


def by_fusion(results: list[dict], metric) -> dict[str, list[float]]:
    grouped = defaultdict(list)
    for result in results:
        value = metric(result)
        if value is not None:
            grouped[result["values"]["fusion"]].append(value)
    return grouped


# how the Trainer ordered the training sentences into batches (train_sampling_strategy), in the budget's words
BATCH_ORDER = {"group_by_length": "batches grouped by length", "random": "batches in random order"}


def epochs_text(results: list[dict]) -> str:
    """The epochs of the budget: as configured, or with early stopping the most and the range the runs trained."""
    args = results[0]["arguments"]
    if not args.get("early_stopping_patience"):
        return f"{args.get('num_train_epochs')} epochs"
    trained = [r["metrics"]["train_epochs"] for r in results if r["metrics"].get("train_epochs") is not None]
    ran = (f", trained {min(trained):g}" + (f"–{max(trained):g}" if max(trained) != min(trained) else "")) if (
        trained) else ""
    window = f"{args['early_stopping_patience']} evaluations"
    samples = results[0]["metrics"].get("train_samples")
    if args.get("eval_strategy") == "steps" and samples:  # evaluations within epochs: the patience in epochs too
        steps = math.ceil(samples / args.get("per_device_train_batch_size", 8))
        window += f" ({args['early_stopping_patience'] * args['eval_steps'] / steps:.1f} epochs)"
    return (f"at most {args.get('num_train_epochs')} epochs, stopped once the validation loss had not improved for "
            f"{window}{ran}")


def budget(results: list[dict]) -> str:
    args = results[0]["arguments"]
    machine = results[0]["machine"]
    device = machine.get("gpu") or f"{machine['cpus']}-core CPU ({machine['processor']})"
    order = BATCH_ORDER.get(args.get("train_sampling_strategy"))
    return (f"{results[0]['metrics'].get('train_samples', '?')} training sentences, {epochs_text(results)}, "
            f"batch {args.get('per_device_train_batch_size')}{f' ({order})' if order else ''}, "
            f"lr {args.get('learning_rate')}, "
            f"sizes `{args.get('config_overrides')}`, max {args.get('max_seq_length')} tokens, "
            f"{'bfloat16' if args.get('bf16') else 'float32'}; validation/test: "
            f"{'the first ' + str(args['max_eval_samples']) if args.get('max_eval_samples') else 'all'} sentences; "
            f"on {device}")


def fusion_table_lines(results: list[dict], paper: dict) -> list[str]:
    best = by_fusion(results, lambda r: r["best_eval_perplexity"])
    test = by_fusion(results, lambda r: r["metrics"].get("test_perplexity"))
    loss = by_fusion(results, lambda r: r["metrics"].get("train_loss"))
    speed = by_fusion(results, lambda r: r["metrics"].get("train_tokens_per_second"))
    none = statistics.mean(best[BASELINE]) if BASELINE in best else None
    paper_none = paper["fusion_table"].get(BASELINE)
    rows = [("variant", "paper (its unit)", "paper, standard perplexity", "change (paper)",
             "validation perplexity (best epoch)", f"change vs {BASELINE}", "test perplexity", "train loss", "train tokens/s")]
    for fusion in FUSIONS:
        if fusion not in best:
            continue
        ours = statistics.mean(best[fusion])
        theirs = paper["fusion_table"].get(fusion)
        paper_cells = ["—", "—", "—"] if theirs is None else [
            f"{theirs:.2f}", f"{standard_perplexity(theirs):.1f}",
            vs_baseline(standard_perplexity(theirs), paper_none and standard_perplexity(paper_none))]
        rows.append((
            f"`{fusion}`", *paper_cells, spread(best[fusion]), vs_baseline(ours, none),
            spread(test[fusion]) if test.get(fusion) else "—",
            f"{statistics.mean(loss[fusion]):.3f}" if loss.get(fusion) else "—",
            f"{statistics.mean(speed[fusion]):.0f}" if speed.get(fusion) else "—",
        ))
    return markdown_table(rows)


def fusion_columns_lines(first: str, groups: dict[str, dict[str, list[float]]], extra: dict[str, tuple] | None = None,
                         extra_header: tuple[str, ...] = ()) -> list[str]:
    """One layout, shared by the experiments that compare fusions across groups (training sizes, domains): a row per
    group (its label, then its `extra` cells), a column per fusion (the mean over seeds, ± sd), then each fusion's
    change against the baseline."""
    fusions = [f for f in FUSIONS if any(f in per_fusion for per_fusion in groups.values())]
    others = [f for f in fusions if f != BASELINE]
    rows = [(first, *extra_header, *(f"`{f}`" for f in fusions), *(f"`{f}` vs {BASELINE}" for f in others))]
    for label, per_fusion in groups.items():
        means = {f: statistics.mean(v) for f, v in per_fusion.items()}
        rows.append((label, *(extra or {}).get(label, ()), *(spread(per_fusion[f]) if f in per_fusion else "—"
                                                               for f in fusions),
                     *(vs_baseline(means.get(f), means.get(BASELINE)) for f in others)))
    return markdown_table(rows)


def limited_data_lines(results: list[dict]) -> tuple[list[str], dict]:
    sizes = defaultdict(lambda: defaultdict(list))  # train size → fusion → perplexities
    for result in results:
        sizes[result["values"]["max_train_samples"]][result["values"]["fusion"]].append(result["best_eval_perplexity"])
    epochs = {r["values"]["max_train_samples"]: r["arguments"].get("num_train_epochs") for r in results}
    groups = {f"{n:,}": sizes[n] for n in sorted(sizes)}
    lines = fusion_columns_lines("training sentences", groups, {f"{n:,}": (f"{epochs[n]}",) for n in sizes},
                                 ("epochs",))
    curves = defaultdict(dict)  # fusion → train size → mean perplexity
    for n, per_fusion in sizes.items():
        for fusion, values in per_fusion.items():
            curves[fusion][n] = statistics.mean(values)
    return lines, dict(curves)


def cross_domain_lines(results: list[dict], table_results: list[dict]) -> tuple[list[str], dict]:
    domains = defaultdict(lambda: defaultdict(list))  # domain → fusion → perplexities
    for result in table_results:
        if result["values"]["fusion"] in {r["values"]["fusion"] for r in results}:
            domains["wikipedia (validation)"][result["values"]["fusion"]].append(result["best_eval_perplexity"])
    for result in results:
        domains[result["values"]["domain"]][result["values"]["fusion"]].append(result["metrics"]["eval_perplexity"])
    table = {domain: {f: statistics.mean(v) for f, v in per_fusion.items()} for domain, per_fusion in domains.items()}
    return fusion_columns_lines("evaluated on", domains), table


# ------------------------------------------------------------------------------------------------ the probes


def fusion_dropout_lines(results: list[dict]) -> list[str]:
    """Each schedule: the best dev perplexity over the evaluations, and the final model's with e_j and with every
    e_j zeroed."""
    none = next((r["best_eval_perplexity"] for r in results if r["values"]["fusion"] == BASELINE), None)
    rows = [("run", "schedule", "dropout", "best dev perplexity", f"vs {BASELINE}", "final, with e_j", "final, e_j zeroed",
             f"zeroed vs {BASELINE}")]
    for r in sorted(results, key=lambda r: (r["values"]["fusion"] != BASELINE, r["run"])):
        values, metrics = r["values"], r["metrics"]
        zeroed = metrics.get("eval_without_fusion_perplexity")
        rows.append((f"`{r['run']}`", values.get("fusion_dropout_schedule", "—"),
                     values.get("fusion_dropout_mode", "—" if values["fusion"] == BASELINE else "vector"),
                     f"{r['best_eval_perplexity']:.1f}", vs_baseline(r["best_eval_perplexity"], none),
                     f"{metrics['eval_perplexity']:.1f}", f"{zeroed:.1f}" if zeroed else "—",
                     vs_baseline(zeroed, none)))
    return markdown_table(rows)


def sub_prefix_lines(results: list[dict], endpoints: dict[str, float]) -> tuple[list[str], dict]:
    """Perplexity per feeder and k; the endpoints (none, concat with the whole prefix) from another experiment.
    Returns the table and, per feeder, {k: perplexity} with the endpoints at k = 0 and 1."""
    none, concat = endpoints.get(BASELINE), endpoints.get("concat")
    rows = [("feeder", "k", "encoder reads", "dev perplexity", f"vs {BASELINE}", "vs concat (whole prefix)")]
    reads = {"subr": r"tokens 0..min(j, k·\|S\|)", "subl": r"tokens k·\|S\|..j"}  # \| : a pipe inside a cell
    curves = {"subr": {}, "subl": {}}
    for r in sorted(results, key=lambda r: (r["values"]["fusion_context"], r["values"]["fusion_context_fraction"])):
        context, k = r["values"]["fusion_context"], r["values"]["fusion_context_fraction"]
        ppl = r["best_eval_perplexity"]
        curves[context][k] = ppl
        rows.append((context, f"{k}", reads[context], f"{ppl:.1f}", vs_baseline(ppl, none),
                     change(ppl, concat) if concat else ""))
    # k = 1 keeps the whole prefix for subr and nothing for subl, k = 0 the reverse
    for context, (whole, empty) in (("subr", (1.0, 0.0)), ("subl", (0.0, 1.0))):
        if concat:
            curves[context][whole] = concat
        if none:
            curves[context][empty] = none
    return markdown_table(rows), curves


# the vector_sources runs' labels: the encoder's two poolings, the leaky window, then every other source of SOURCES
SOURCE_LABELS = {"encoder_cls": "encoder, CLS (the default)", "encoder_mean": "encoder, mean pooling",
                 "sentence": "whole-sentence leak (not causal)",
                 **{name: spec.label for name, spec in SOURCES.items() if name != "encoder"}}


def source_name(values: dict) -> str:
    return "_".join(str(v) for k, v in values.items() if k not in ("fusion", "seed"))


def vector_sources_lines(results: list[dict], none: float | None) -> list[str]:
    """Rows: vector sources; columns: the artefact-only MLP and concat."""
    table = defaultdict(dict)
    for r in results:
        table[source_name(r["values"])][r["values"]["fusion"]] = r["best_eval_perplexity"]
    rows = [("vector source", "artefact-only MLP (no LSTM)", "concat", f"concat vs {BASELINE}")]
    for source in [s for s in SOURCE_LABELS if s in table] + [s for s in table if s not in SOURCE_LABELS]:
        row = table[source]
        mlp, concat = row.get("embedding_only"), row.get("concat")
        rows.append((SOURCE_LABELS.get(source, source), f"{mlp:.1f}" if mlp else "—",
                     f"{concat:.1f}" if concat else "—", vs_baseline(concat, none)))
    return markdown_table(rows)


def is_plain(values: dict, fusion: str = BASELINE) -> bool:
    """A sentence-level run of `fusion` with nothing else changed (only its seed varies): what other runs are compared
    with (none by default, whose surprisal every model's is compared with)."""
    return values["fusion"] == fusion and set(values) <= {"fusion", "seed"}


def has_story_gains(result: dict) -> bool:
    """Whether a reading-time result holds its per-story held-out gains (results scored before they were stored do
    not), which every paired comparison needs."""
    return "by_group" in result["metrics"].get("held_out", {})


def paired_by_story(model: dict, reference: dict) -> dict | None:
    """compare_held_out of two reading-time results (the model's held-out ΔLL minus the reference's, its interval and
    the paired sign-flip p), or None where either lacks the per-story gains."""
    if not (has_story_gains(model) and has_story_gains(reference)):
        return None
    return compare_held_out(model["metrics"]["held_out"], reference["metrics"]["held_out"])


def versus_baseline(results: list[dict]) -> dict[str, dict]:
    """Each model's held-out ΔLL against that of the plain none model of its seed (paired_by_story), for the runs
    whose results hold the per-story gains."""
    references = {r["values"].get("seed"): r for r in results if is_plain(r["values"]) and has_story_gains(r)}
    return {r["run"]: paired_by_story(r, references[r["values"].get("seed")])
            for r in results if not is_plain(r["values"]) and r["values"].get("seed") in references
            and has_story_gains(r)}


def comparison_text(comparison: dict | None, scale: float = 1000, digits: int = 2) -> str:
    if comparison is None:
        return "—"
    low, high = comparison["interval_95"]
    return (f"{comparison['difference'] * scale:+.{digits}f} [{low * scale:.{digits}f}, {high * scale:.{digits}f}], "
            f"p = {comparison['p_value']:.3g}")


def reading_times_lines(results: list[dict], means: bool = True) -> list[str]:
    compared = versus_baseline(results)
    rows = [("model", "bits per word", "Pearson r", "Spearman ρ", "ΔLL held out [95 % interval]", "ΔLL in-sample",
             "surprisal coefficient (ms per bit)", *([f"held-out ΔLL vs `{BASELINE}` [95 %]"] if compared else []))]
    for result in sorted(results, key=lambda r: (list(FUSIONS).index(r["values"]["fusion"]), r["run"])):
        m = result["metrics"]
        rows.append((f"`{result['run']}`", f"{m['mean_surprisal_bits']:.2f}", f"{m['pearson_r']:.4f}",
                     f"{m['spearman_rho']:.4f}",
                     held_out_text(m, scale=1000, digits=2),
                     f"{m['delta_log_likelihood'] * 1000:.2f}", f"{m['surprisal_coefficient_ms_per_bit']:.2f}",
                     *([comparison_text(compared.get(result["run"]))] if compared else [])))
    for metric, label in (("pearson_r", "Pearson r"), ("delta_log_likelihood", "ΔLL in-sample")) if means else ():
        by = {f: statistics.mean(v) for f, v in by_fusion(results, lambda r: r["metrics"][metric]).items()}
        if len(by) > 1:
            scale = 1000 if metric == "delta_log_likelihood" else 1
            rows.append((f"mean {label}", ", ".join(f"`{f}` {v * scale:.4f}" for f, v in by.items()), "", "", "",
                         "", "", *([""] if compared else [])))
    spillover = {r["metrics"].get("spillover", 1) for r in results}
    versus = (f" The last column: the model's held-out ΔLL minus that of `{BASELINE}` of its seed, with the one-sided "
              "sign-flip p that it is larger, paired by story (`compare_held_out`).") if compared else ""
    return [*markdown_table(rows), "", "*Bits per word*: the model's mean word surprisal on the corpus (log2 of its "
            f"word perplexity). ΔLL in 10⁻³ nats per word; spillover: {', '.join(map(str, spillover))} "
            "previous word(s); held out: 10-fold cross-validation over stories (sentences where the stories are not "
            f"given), interval: bootstrap over them.{versus}"]


def paper_change(paper: dict) -> float | None:
    """The paper's change of concat against none, in % of standard perplexity."""
    table = paper["fusion_table"]
    if BASELINE not in table or "concat" not in table:
        return None
    return (standard_perplexity(table["concat"]) / standard_perplexity(table[BASELINE]) - 1) * 100


# ------------------------------------------------------------------------------------------------ the sections


@dataclass
class SectionContext:
    """What a section function reads: its experiment's results at one scale, the experiment's JSON, the paper's
    numbers, the other experiments' results, and where its figures go."""

    name: str
    scale: str
    results: list[dict]
    spec: dict
    paper: dict
    found: dict
    figures_dir: Path
    link: Callable[[Path], str]

    def figure(self, stem: str) -> Path:
        return self.figures_dir / f"{stem}_{self.scale}.png"

    def results_of(self, experiment: str) -> list[dict]:
        return self.found.get((self.scale, experiment), [])

    def endpoints(self) -> dict[str, float]:
        """The best dev perplexity of the runs named by the JSON's "endpoints" (another experiment's runs)."""
        spec = self.spec["endpoints"]
        runs = {r["run"]: r for r in self.results_of(spec["experiment"])}
        return {name: runs[run]["best_eval_perplexity"] for name, run in spec["runs"].items() if run in runs}

    def prose(self, **values) -> list[str]:
        """The section's heading, the paper's description (if the JSON has one) and its text with {fields}
        filled from `values`."""
        report = self.spec["report"]
        out = [f"### {report['title']} ({self.scale} scale)", ""]
        if "paper" in report:
            out += [f"The paper: {report['paper']}", ""]
        return out + [fill(report["text"], scale=self.scale, **values), ""]


SECTIONS: dict[str, Callable[[SectionContext], list[str]]] = {}


def section(name: str):
    """Registers the function that writes the section of experiment `name`."""

    def register(function):
        SECTIONS[name] = function
        return function

    return register


def fill(text: str, **values) -> str:
    """`text` with each {field} replaced by values[field] (a field without a value is an error)."""

    def value(match):
        if match.group(1) not in values:
            raise KeyError(f"report text names {{{match.group(1)}}}, which its section does not give.")
        return str(values[match.group(1)])

    return re.sub(r"\{(\w+)\}", value, text)


@section("demo")
def demo_section(ctx: SectionContext) -> list[str]:
    minutes = sum(r["wall_seconds"] for r in ctx.results) / 60
    return [*ctx.prose(budget=budget(ctx.results), minutes=f"{minutes:.1f}"), "```",
            *RUN_KINDS["train"].summary(ctx.results), "```", ""]


@section("fusion_table")
def fusion_table_section(ctx: SectionContext) -> list[str]:
    out = [*ctx.prose(budget=budget(ctx.results)), *fusion_table_lines(ctx.results, ctx.paper), "",
           ctx.spec["report"]["after"]]
    best = {f: statistics.mean(v) for f, v in by_fusion(ctx.results, lambda r: r["best_eval_perplexity"]).items()}
    figure = ctx.figure("fusion_table")
    if BASELINE in best:
        plot_changes({f: {"validation": (best[f] / best[BASELINE] - 1) * 100} for f in FUSIONS
                      if f in best and f != BASELINE},
                     figure, f"fusion variants vs {BASELINE} ({ctx.scale} scale)", paper_change(ctx.paper))
    return out + ["", f"![fusion variants]({ctx.link(figure)})", ""]


@section("limited_data")
def limited_data_section(ctx: SectionContext) -> list[str]:
    lines, curves = limited_data_lines(ctx.results)
    figure = ctx.figure("limited_data")
    plot_limited_data(curves, figure, ctx.scale)
    largest = max(ctx.results, key=lambda r: r["values"]["max_train_samples"])
    return [*ctx.prose(budget=budget([largest])), *lines, "", f"![limited data]({ctx.link(figure)})", ""]


@section("learning_curve")
def learning_curve_section(ctx: SectionContext) -> list[str]:
    curve = Curve.of(ctx.results)
    figure = ctx.figure("learning_curve")
    plot_learning_curve(curve, figure, ctx.scale)
    largest = [r for r in ctx.results if r["values"]["max_train_samples"] == curve.sizes[-1]]
    open_runs = unfinished(curve)
    said = finding(curve)
    return [*ctx.prose(budget=budget(largest)), *([f"In short: {said}", ""] if said else []),
            "Converged: the best validation perplexity over all evaluations (mean ± sd over seeds), each fusion's "
            "change against the none trained the same way at the same size, and the test perplexity of the same "
            "models (the evaluation chosen on validation):", "", *converged_lines(curve), "",
            *(["The gain at a fixed budget, read off the same runs' evaluations, beside the gain at convergence:", "",
               *budget_lines(curve), ""] if len(budget_lines(curve)) > 2 else []),
            *([f"Ended by the epoch limit, not by early stopping (not converged): {', '.join(open_runs)}.", ""]
              if open_runs else []), f"![learning curves]({ctx.link(figure)})", ""]


@section("cross_domain")
def cross_domain_section(ctx: SectionContext) -> list[str]:
    lines, table = cross_domain_lines(ctx.results, ctx.results_of("fusion_table"))
    figure = ctx.figure("cross_domain")
    plot_changes({domain: {f: (v / row[BASELINE] - 1) * 100 for f, v in row.items() if f != BASELINE}
                  for domain, row in table.items() if BASELINE in row},
                 figure, f"cross-domain: change vs {BASELINE} ({ctx.scale} scale)", paper_change(ctx.paper))
    samples = sorted({Path(r["arguments"]["validation_file"]).name for r in ctx.results})
    return [*ctx.prose(samples=", ".join(samples)), *lines, "", f"![cross-domain]({ctx.link(figure)})", ""]


@section("reading_times")
def reading_times_section(ctx: SectionContext) -> list[str]:
    figure = ctx.figure("reading_times")
    plot_reading_times(ctx.results, figure, ctx.scale)
    m = ctx.results[0]["metrics"]
    excluded = m["excluded_from_regression"]
    first_words = excluded.get("first_words_of_sentence", excluded.get("first_word_of_sentence"))  # before spillover
    prose = ctx.prose(words=f"{m['words']:,}", paper=ctx.spec["report"]["paper_finding"], first_words=first_words,
                      punctuated=excluded["with_punctuation"], regression_words=f"{m['regression_words']:,}")
    return [*prose, *reading_times_lines(ctx.results), "", f"![reading times]({ctx.link(figure)})", ""]


@section("fusion_dropout")
def fusion_dropout_section(ctx: SectionContext) -> list[str]:
    figure = ctx.figure("fusion_dropout")
    plot_curves(ctx.results, figure, f"fusion dropout schedules ({ctx.scale} scale)",
                "validation perplexity (e_j present)")
    evaluations = max(len(r["eval_curve"]) for r in ctx.results)
    return [*ctx.prose(budget=budget(ctx.results), evaluations=evaluations), *fusion_dropout_lines(ctx.results), "",
            f"![fusion dropout]({ctx.link(figure)})", ""]


@section("sub_prefix")
def sub_prefix_section(ctx: SectionContext) -> list[str]:
    endpoints = ctx.endpoints()
    lines, curves = sub_prefix_lines(ctx.results, endpoints)
    figure = ctx.figure("sub_prefix")
    plot_sub_prefix(curves, endpoints, figure, ctx.scale)
    return [*ctx.prose(budget=budget(ctx.results), endpoints=ctx.spec["endpoints"]["experiment"]), *lines, "",
            f"![sub-prefix feeders]({ctx.link(figure)})", ""]


@section("vector_sources")
def vector_sources_section(ctx: SectionContext) -> list[str]:
    endpoints = ctx.endpoints()
    mlp = next((r for r in ctx.results if r["values"]["fusion"] == "embedding_only"), ctx.results[0])
    sizes = {"hidden_size": FusionLSTMConfig.hidden_size, "projection_size": FusionLSTMConfig.projection_size}
    overrides = mlp["arguments"].get("config_overrides")
    sizes.update(item.split("=") for item in (overrides or "").split(",") if item)
    none = f"{endpoints[BASELINE]:.1f}" if BASELINE in endpoints else "not run"
    return [*ctx.prose(budget=budget(ctx.results), mlp_sizes=f"{sizes['hidden_size']} → {sizes['projection_size']}",
                       endpoints=ctx.spec["endpoints"]["experiment"], none=none),
            *vector_sources_lines(ctx.results, endpoints.get(BASELINE)), ""]


@section("prefix_similarity")
def prefix_similarity_section(ctx: SectionContext) -> list[str]:
    figure = ctx.figure("prefix_similarity")
    plot_similarity(ctx.results, figure, ctx.scale)
    return [*ctx.prose(), *markdown_table(similarity_rows(ctx.results)), "",
            f"![prefix similarity]({ctx.link(figure)})", ""]


# Run values that change how a run trains rather than what it reads: each in words after the run's context
TRAINING_CHANGES = {
    "train_sampling_strategy": lambda v: "batches in random order instead of grouped by length" if v == "random" else "",
    "tie_word_embeddings": lambda v: "input and output embeddings tied" if v else "",
    "dropout": lambda v: f"dropout {v}",
    "fusion_dropout": lambda v: f"e_j dropped with probability {v}",
}


def context_label(values: dict) -> str:
    """How a run reads the document's context (or, for a control, what its e_j is), in words, then what else it
    changes (TRAINING_CHANGES)."""
    source = values.get("fusion_vectors", "encoder")
    count = values.get("context_sentences", 0)
    if source != "encoder":
        label = SOURCES[source].label if source in SOURCES else source
    elif count:
        how = ("as tokens, by the LSTM" if values.get("context_as_tokens")
               else f"by the encoder ({values.get('fusion_context')})")
        label = f"previous {count} sentence{'s' if count > 1 else ''}, {how}"
    else:
        label = "none (the sentence alone)" if values["fusion"] == BASELINE else "the prefix, by the encoder (the paper)"
    changes = [said(values[key]) for key, said in TRAINING_CHANGES.items() if key in values]
    return ", ".join([label, *filter(None, changes)])


def seed_groups(results: list[dict]) -> list[list[dict]]:
    """The runs that differ only in their seed, for each run trained with more than one, in the order of the seeds."""
    groups = defaultdict(list)
    for r in results:
        groups[tuple(sorted((k, str(v)) for k, v in r["values"].items() if k != "seed"))].append(r)
    return [sorted(g, key=lambda r: r["values"]["seed"]) for g in groups.values() if len(g) > 1]


def seed_spread_lines(results: list[dict]) -> list[str]:
    """For each run trained with more than one seed: its best dev perplexities and how far apart they are, the
    yardstick for the differences between runs of one seed."""
    spreads = []
    for runs in seed_groups(results):
        values = [r["best_eval_perplexity"] for r in runs]
        names = " / ".join(f"`{r['run']}`" for r in runs)
        spreads.append(f"{names}: {' / '.join(f'{v:.1f}' for v in values)} "
                       f"({(max(values) / min(values) - 1) * 100:.1f} % apart)")
    if not spreads:
        return []
    return [f"*Seed to seed* (one run trained again with another seed; a difference between runs of one seed that is "
            f"smaller than this is within what the seed alone changes): {'; '.join(spreads)}.", ""]


# The evaluations of a context model with its context replaced (run_clm --eval_context_controls): column → metric
CONTROL_COLUMNS = {"context emptied": "eval_empty_context_perplexity",
                   "another document's context": "eval_other_document_perplexity"}


@section("document_context")
def document_context_section(ctx: SectionContext) -> list[str]:
    def reference(fusion: str) -> float | None:
        """The mean best dev perplexity over seeds of the plain runs of `fusion`: sentence-level, the encoder's e_j,
        nothing else changed."""
        values = [r["best_eval_perplexity"] for r in ctx.results
                  if is_plain(r["values"], fusion)]
        return statistics.mean(values) if values else None

    none, concat = reference(BASELINE), reference("concat")
    # the control for what a fixed e_j does: concat with one constant vector, where it was run
    control = next((r["best_eval_perplexity"] for r in ctx.results if r["values"].get("fusion_vectors") == "constant"),
                   None)
    controls = [c for c, metric in CONTROL_COLUMNS.items() if any(metric in r["metrics"] for r in ctx.results)]
    rows = [("run", "fusion", "context", "dev perplexity (best epoch)", f"vs {BASELINE}", "vs concat (the paper)",
             *(["vs one constant vector (control)"] if control else []), *controls, "test perplexity",
             "train loss", "encoder sentences/s")]
    for r in sorted(ctx.results, key=lambda r: (r["values"]["fusion"] != BASELINE, r["values"].get("context_sentences", 0),
                                                r["run"])):
        ppl, metrics = r["best_eval_perplexity"], r["metrics"]
        test, speed = metrics.get("test_perplexity"), metrics.get("train_embedding_sentences_per_second")
        loss = metrics.get("train_loss")
        replaced = [metrics.get(CONTROL_COLUMNS[c]) for c in controls]
        rows.append((f"`{r['run']}`", f"`{r['values']['fusion']}`", context_label(r["values"]), f"{ppl:.1f}",
                     vs_baseline(ppl, none), change(ppl, concat) if concat else "—",
                     *([change(ppl, control)] if control else []),
                     *(f"{value:.1f} ({change(value, ppl)})" if value else "—" for value in replaced),
                     f"{test:.1f}" if test else "—", f"{loss:.2f}" if loss else "—", f"{speed:.1f}" if speed else "—"))
    train = ctx.results[0]["metrics"].get("train_samples", "?")
    figure = ctx.figure("document_context_curves")  # which runs learn sooner, and which overfit sooner
    plot_curves(ctx.results, figure, f"validation perplexity per epoch ({ctx.scale} scale)")
    return [*ctx.prose(budget=budget(ctx.results), train=f"{train:,}" if isinstance(train, int) else train),
            *markdown_table(rows), "", *seed_spread_lines(ctx.results), f"![validation curves]({ctx.link(figure)})", ""]


def story_effect_lines(results: list[dict]) -> list[str]:
    """For each model scored both reading its story and reading none of it (`_read0`): the held-out ΔLL of the one
    minus the other's, paired by story (paired_by_story), the story's own share of the model's fit."""
    with_story = {json.dumps(r["values"], sort_keys=True): r for r in results}
    effects = []
    for without in results:
        values = dict(without["values"])
        if values.pop("scored_context_sentences", None) != 0:
            continue
        story = with_story.get(json.dumps(values, sort_keys=True))
        if story and (comparison := paired_by_story(story, without)):
            effects.append(f"`{story['run']}` {comparison_text(comparison)}")
    if not effects:
        return []
    return ["*Reading the story against not reading it* (each model's held-out ΔLL reading its story minus the same "
            "model's reading none of it, 10⁻³ nats per word [95 %], one-sided sign-flip p, paired by story): "
            f"{'; '.join(effects)}.", ""]


def reading_seed_lines(results: list[dict]) -> list[str]:
    """For each model trained with more than one seed: the held-out ΔLL of each later seed minus its first seed's,
    paired by story, the yardstick for the comparisons between models of one seed."""
    pairs = []
    for first, *others in seed_groups(results):
        for other in others:
            if comparison := paired_by_story(other, first):
                pairs.append(f"`{other['run']}` minus `{first['run']}` {comparison_text(comparison)}")
    if not pairs:
        return []
    return ["*Seed to seed* (the same model trained with another seed, its held-out ΔLL minus the first seed's, "
            f"10⁻³ nats per word [95 %], paired by story): {'; '.join(pairs)}.", ""]


@section("document_reading_times")
def document_reading_times_section(ctx: SectionContext) -> list[str]:
    figure = ctx.figure("document_reading_times")
    plot_reading_times(ctx.results, figure, ctx.scale)
    # one seed each and runs that differ in more than the fusion: no means by fusion
    return [*ctx.prose(words=f"{ctx.results[0]['metrics']['words']:,}"), *reading_times_lines(ctx.results, False), "",
            *story_effect_lines(ctx.results), *reading_seed_lines(ctx.results),
            f"![reading times with the story]({ctx.link(figure)})", ""]


# Prose before the first section of a group
GROUP_INTROS = {"probes": lambda paper: [f"**The paper's probes.** {paper['probes']['note']}", ""]}


def build_section(results_dir: Path, figures_dir: Path, readme_dir: Path) -> str:
    """The generated results section (markdown) and the figures it links, from results_dir."""
    paper = json.loads((EXPERIMENTS_DIR / "paper.json").read_text())
    found = load_results(results_dir)
    if not found:
        raise ValueError(f"{results_dir} holds no results JSONs (results/<scale>/<experiment>/<run>.json): run an "
                         "experiment first, or pass the --results_dir that has them.")
    figures_dir.mkdir(parents=True, exist_ok=True)
    link = lambda path: Path(os.path.relpath(path, readme_dir)).as_posix()  # noqa: E731
    scales = json.loads((EXPERIMENTS_DIR / "scales.json").read_text())
    vocabulary = scales["cpu"]["tokenizer"]["vocab_size"]
    out = [START, "", "*Generated by `python reproduce.py report` from the results JSONs in "
           f"`{link(results_dir)}/`; do not edit by hand.* Perplexity here is standard perplexity, "
           "exp(mean token cross-entropy in nats). The paper reports 2 ** (that mean), so its numbers are shown "
           f"converted beside ours ({paper['source']}). Its data, tokenizer and encoder differ from ours "
           "(WikiText-103 sentences with its BPE and bert-base-cased; here the Wikipedia sentences of "
           f"`../shared/data` with an {vocabulary}-token BPE and the packaged MiniLM), so compare the changes, not the "
           "levels.", ""]
    for scale in SCALE_ORDER:
        groups_started = set()
        if any(found.get((scale, name)) for name in SECTIONS):
            out += [f"**Protocol at `--scale {scale}`: {scales[scale]['protocol']}**", ""]
        for name, write in SECTIONS.items():
            results = found.get((scale, name), [])
            if not results:
                continue
            spec = load_spec(name)
            group = spec["report"].get("group")
            if group and group not in groups_started:
                groups_started.add(group)
                out += GROUP_INTROS[group](paper)
            out += write(SectionContext(name, scale, results, spec, paper, found, figures_dir, link))
    out += fit_vs_quality_lines(found, figures_dir, link)
    return "\n".join(out + [END])


def fit_vs_quality_lines(found: dict, figures_dir: Path, link: Callable[[Path], str]) -> list[str]:
    """Every scored model of every reading-time experiment and scale in one figure: its held-out ΔLL against how well
    it predicts the corpus (bits per word), with the question it answers; nothing with fewer than two such models."""
    scored = [r for results in found.values() for r in results
              if "mean_surprisal_bits" in r["metrics"] and r["metrics"].get("held_out")]
    if len(scored) < 2:
        return []
    figure = figures_dir / "fit_vs_quality.png"
    plot_fit_vs_quality(scored, figure)
    return ["### Better language models, better fit? (all scales)", "",
            f"Each of the {len(scored)} models scored on the reading times above, at every scale: its held-out ΔLL "
            "against its mean word surprisal on the corpus (bits per word; fewer bits, a better model of the stories). "
            "Studies across many language models find the gain in fit growing about linearly with how well the model "
            "predicts the corpus (Goodkind & Bicknell 2018; Wilcox et al. 2020), until models far better than these "
            "(Oh & Schuler 2023 find it falling again for transformers larger than GPT-2 small): where these models "
            "sit on that line says how much a difference between them could show.", "",
            f"![fit against language-model quality]({link(figure)})", ""]


def check_markers(document: Path, start: str, end: str) -> str:
    """The text of `document`, which must hold the markers of its generated section."""
    text = Path(document).read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise ValueError(f"{document} has no generated section: add the lines {start} and {end} where it goes.")
    return text


def replace_between(document: Path, start: str, end: str, section_text: str):
    """Replaces the lines from `start` to `end` of `document` with `section_text` (which carries the markers)."""
    text = check_markers(document, start, end)
    before, rest = text.split(start, 1)
    Path(document).write_text(before + section_text + rest.split(end, 1)[1], encoding="utf-8")


def write_report(results_dir: Path, document: Path, figures_dir: Path) -> str:
    """Replaces the section between the results markers of `document` (docs/reproducing.md); returns the section.
    Refuses, leaving the file as it is, when there are no results."""
    check_markers(document, START, END)
    section_text = build_section(Path(results_dir).resolve(), Path(figures_dir).resolve(),
                                 Path(document).resolve().parent)
    replace_between(document, START, END, section_text)
    return section_text


def build_headline(results_dir: Path, figures_dir: Path, readme_dir: Path, details: str) -> str:
    """The README's short results table: each fusion variant of the largest scale whose fusion_table compares a
    fusion with none, beside the paper's change, and the figure that `build_section` drew for it; `details` links
    the full results."""
    paper = json.loads((EXPERIMENTS_DIR / "paper.json").read_text())
    found = load_results(results_dir)

    def compares(results: list[dict]) -> bool:
        fusions = {r["values"].get("fusion") for r in results}
        return BASELINE in fusions and len(fusions) > 1

    scale = next((s for s in reversed(SCALE_ORDER) if compares(found.get((s, "fusion_table"), []))), None)
    if scale is None:
        raise NoHeadline(f"{results_dir} holds no fusion_table results that compare a fusion with none: run python "
                         "reproduce.py fusion_table first.")
    best = {f: statistics.mean(v) for f, v in
            by_fusion(found[(scale, "fusion_table")], lambda r: r["best_eval_perplexity"]).items()}
    theirs = {f: standard_perplexity(v) for f, v in paper["fusion_table"].items()}
    rows = [("variant", "validation perplexity", f"change vs {BASELINE}", "the paper's change")]
    for fusion in (f for f in FUSIONS if f in best):
        paper_cell = vs_baseline(theirs.get(fusion), theirs.get(BASELINE)) if fusion != BASELINE else "—"
        rows.append((f"`{fusion}`", f"{best[fusion]:.1f}", vs_baseline(best[fusion], best[BASELINE]) if fusion != BASELINE
                     else "—", paper_cell))
    figure = Path(os.path.relpath(figures_dir / f"fusion_table_{scale}.png", readme_dir)).as_posix()
    budget_line = budget(found[(scale, "fusion_table")])
    curve = curve_headline(found, figures_dir, readme_dir)
    regime = "The short-budget regime: the" if curve else "The"
    return "\n".join([HEADLINE_START, "", f"*Generated by `python reproduce.py report`. All tables and figures: "
                      f"[{details}]({details}#results).*", *curve,
                      f"{regime} fusion variants at `--scale {scale}` ({budget_line}); standard perplexity at the best "
                      "epoch, the paper's change converted to it.", "",
                      *markdown_table(rows), "", *([] if curve else [f"![fusion variants]({figure})", ""]),
                      *scoring_speed(found.get((scale, "reading_times"), [])), HEADLINE_END])


def curve_headline(found: dict, figures_dir: Path, readme_dir: Path) -> list[str]:
    """The headline's first part, where a learning curve compares concat with none: the finding at its two ends,
    its table and figure (drawn by its section)."""
    scale = next((s for s in reversed(SCALE_ORDER) if found.get((s, "learning_curve"))), None)
    curve = Curve.of(found[(scale, "learning_curve")]) if scale else None
    said = finding(curve) if curve else None
    if not said:
        return []
    figure = Path(os.path.relpath(figures_dir / f"learning_curve_{scale}.png", readme_dir)).as_posix()
    largest = [r for r in found[(scale, "learning_curve")] if r["values"]["max_train_samples"] == curve.sizes[-1]]
    return [f"**When does the sentence embedding help?** The learning curve (`python reproduce.py learning_curve "
            f"--scale {scale}`: {budget(largest)}; every run to convergence), at {said}", "",
            *headline_lines(curve), "", f"![learning curves]({figure})", ""]


def scoring_speed(results: list[dict]) -> list[str]:
    """How fast run_surprisal scored Natural Stories with each fusion (mean words/s over its models), where the
    reading_times results recorded it."""
    speeds = by_fusion([r for r in results if "words_per_second" in r["metrics"]],
                       lambda r: r["metrics"]["words_per_second"])
    if not speeds:
        return []
    machine = results[0].get("machine", {})
    where = machine["gpu"] if machine.get("gpu") else f"{machine.get('cpus', '?')}-core CPU"
    words = results[0]["metrics"]["words"]
    cells = ", ".join(f"`{f}` {statistics.mean(speeds[f]):,.0f} words/s" for f in FUSIONS if f in speeds)
    return [f"Scoring surprisal (`run_surprisal.py`, the reading_times experiment) on Natural Stories ({words:,} "
            f"words) on the {where} that made these results: {cells}. A fusion model runs its encoder once per "
            "prefix, which dominates its time.", ""]


class NoHeadline(ValueError):
    """The results hold no fusion_table that compares a fusion with none: there is no headline to write."""


def headline_text(results_dir: Path, readme: Path, figures_dir: Path, document: Path) -> str:
    readme_dir = Path(readme).resolve().parent
    details = Path(os.path.relpath(Path(document).resolve(), readme_dir)).as_posix()
    return build_headline(Path(results_dir).resolve(), Path(figures_dir).resolve(), readme_dir, details)


def write_headline(results_dir: Path, readme: Path, figures_dir: Path, document: Path) -> str:
    headline = headline_text(results_dir, readme, figures_dir, document)
    replace_between(readme, HEADLINE_START, HEADLINE_END, headline)
    return headline


def write_reports(results_dir: Path, document: Path, readme: Path | None, figures_dir: Path,
                  speed: SpeedPages | None = None) -> list[Path]:
    """The results section of `document` and, where the results compare fusions in a fusion_table and `readme` is
    given, the headline of `readme`; with `speed`, the speed suite's pages (docs/speed.md's summary, bench/README.md's
    tables): all checked and built before any is written, so a refusal leaves every file as it was. A document that
    does not exist yet is created. Returns the files written."""
    document = Path(document)
    if not document.exists():
        document.parent.mkdir(parents=True, exist_ok=True)
        document.write_text(f"# Results\n\n{START}\n{END}\n", encoding="utf-8")
    targets = [(document, START, END)] + ([(Path(readme), HEADLINE_START, HEADLINE_END)] if readme else [])
    targets += speed.markers() if speed else []
    for path, start, end in targets:
        check_markers(path, start, end)
    speed_texts = speed.texts() if speed else []
    section = build_section(Path(results_dir).resolve(), Path(figures_dir).resolve(), document.resolve().parent)
    headline = None
    if readme:
        try:
            headline = headline_text(results_dir, readme, figures_dir, document)
        except NoHeadline as reason:
            logger.warning("%s keeps its headline: %s", readme, reason)
    replace_between(document, START, END, section)
    if headline is not None:
        replace_between(readme, HEADLINE_START, HEADLINE_END, headline)
    for path, start, end, text in speed_texts:
        replace_between(path, start, end, text)
    return [document] + ([Path(readme)] if headline is not None else []) + [page for page, *_ in speed_texts]
