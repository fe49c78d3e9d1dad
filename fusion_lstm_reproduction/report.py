"""Tables and figures of the paper's experiments, from the results JSONs only (no number typed in by hand): the
results section of docs/reproducing.md, the README's headline table, and PNG figures.

Each experiment's section is one function registered under the experiment's name (`@section("name")`); its prose
(title, what the paper did, what the run does) is the "report" object of the experiment's JSON, with {fields}
filled from the results. Sections appear in the order they are registered; a section whose experiment has no
results is left out.
"""

import json
import logging
import os
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modeling_fusion_lstm import BASELINE_FUSION, FUSIONS, FusionLSTMConfig, PAPER_FUSION

from .records import Result
from .experiments import EXPERIMENTS_DIR, RUN_KINDS, SCALES, load_spec
from .figures import (
    plot_changes, plot_curves, plot_fit_vs_quality, plot_learning_curve, plot_limited_data, plot_reading_times,
    plot_similarity, plot_sub_prefix,
)
from .headline import HEADLINE_END, HEADLINE_START, NoHeadline, headline_text
from .learning_curve import Curve, budget_lines, converged_lines, finding, unfinished
from .pages import GeneratedText, write_pages
from .reading_comparisons import reading_seed_lines, reading_times_lines, scoring_speed, story_effect_lines
from .results import budget, by_fusion, is_plain, load_results, paper_change
from .similarity import similarity_rows
from .speed import SpeedPages
from .section_tables import (
    context_label, cross_domain_lines, fusion_dropout_lines, fusion_table_lines, limited_data_lines, seed_spread_lines,
    sub_prefix_lines, vector_sources_lines,
)
from .tables import change, markdown_table, vs_baseline


START, END = "<!-- results:start -->", "<!-- results:end -->"


logger = logging.getLogger(__name__)


@dataclass
class SectionContext:
    """What a section function reads: its experiment's results at one scale, the experiment's JSON, the paper's
    numbers, the other experiments' results, and where its figures go."""

    name: str
    scale: str
    results: list[Result]
    spec: dict
    paper: dict
    found: dict
    figures_dir: Path
    link: Callable[[Path], str]

    def figure(self, stem: str) -> Path:
        return self.figures_dir / f"{stem}_{self.scale}.png"

    def results_of(self, experiment: str) -> list[Result]:
        return self.found.get((self.scale, experiment), [])

    def endpoints(self) -> dict[str, float]:
        """The best dev perplexity of the runs named by the JSON's "endpoints" (another experiment's runs)."""
        spec = self.spec["endpoints"]
        runs = {r.run: r for r in self.results_of(spec["experiment"])}
        return {name: runs[run].best_eval_perplexity for name, run in spec["runs"].items() if run in runs}

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
    minutes = sum(r.wall_seconds for r in ctx.results) / 60
    return [*ctx.prose(budget=budget(ctx.results), minutes=f"{minutes:.1f}"), "```",
            *RUN_KINDS["train"].summary(ctx.results), "```", ""]


@section("fusion_table")
def fusion_table_section(ctx: SectionContext) -> list[str]:
    out = [*ctx.prose(budget=budget(ctx.results)), *fusion_table_lines(ctx.results, ctx.paper), "",
           ctx.spec["report"]["after"]]
    best = {f: statistics.mean(v) for f, v in by_fusion(ctx.results, lambda r: r.best_eval_perplexity).items()}
    figure = ctx.figure("fusion_table")
    if BASELINE_FUSION in best:
        plot_changes({f: {"validation": (best[f] / best[BASELINE_FUSION] - 1) * 100} for f in FUSIONS
                      if f in best and f != BASELINE_FUSION},
                     figure, f"fusion variants vs {BASELINE_FUSION} ({ctx.scale} scale)", paper_change(ctx.paper))
    return out + ["", f"![fusion variants]({ctx.link(figure)})", ""]


@section("limited_data")
def limited_data_section(ctx: SectionContext) -> list[str]:
    lines, curves = limited_data_lines(ctx.results)
    figure = ctx.figure("limited_data")
    plot_limited_data(curves, figure, ctx.scale)
    largest = max(ctx.results, key=lambda r: r.values["max_train_samples"])
    return [*ctx.prose(budget=budget([largest])), *lines, "", f"![limited data]({ctx.link(figure)})", ""]


@section("learning_curve")
def learning_curve_section(ctx: SectionContext) -> list[str]:
    curve = Curve.of(ctx.results)
    figure = ctx.figure("learning_curve")
    plot_learning_curve(curve, figure, ctx.scale)
    largest = [r for r in ctx.results if r.values["max_train_samples"] == curve.sizes[-1]]
    open_runs = unfinished(curve)
    said = finding(curve)
    early = budget_lines(curve)  # a header and its rule alone where no fusion ran yet
    return [*ctx.prose(budget=budget(largest)), *([f"In short: {said}", ""] if said else []),
            "Converged: the best validation perplexity over all evaluations (mean ± sd over seeds), each fusion's "
            "change against the none trained the same way at the same size, and the test perplexity of the same "
            "models (the evaluation chosen on validation):", "", *converged_lines(curve), "",
            *(["The gain at a fixed budget, read off the same runs' evaluations, beside the gain at convergence:", "",
               *early, ""] if len(early) > 2 else []),
            *([f"Ended by the epoch limit, not by early stopping (not converged): {', '.join(open_runs)}.", ""]
              if open_runs else []), f"![learning curves]({ctx.link(figure)})", ""]


@section("cross_domain")
def cross_domain_section(ctx: SectionContext) -> list[str]:
    lines, table = cross_domain_lines(ctx.results, ctx.results_of("fusion_table"))
    figure = ctx.figure("cross_domain")
    plot_changes({domain: {f: (v / row[BASELINE_FUSION] - 1) * 100 for f, v in row.items() if f != BASELINE_FUSION}
                  for domain, row in table.items() if BASELINE_FUSION in row},
                 figure, f"cross-domain: change vs {BASELINE_FUSION} ({ctx.scale} scale)", paper_change(ctx.paper))
    samples = sorted({Path(r.arguments["validation_file"]).name for r in ctx.results})
    return [*ctx.prose(samples=", ".join(samples)), *lines, "", f"![cross-domain]({ctx.link(figure)})", ""]


@section("reading_times")
def reading_times_section(ctx: SectionContext) -> list[str]:
    figure = ctx.figure("reading_times")
    plot_reading_times(ctx.results, figure, ctx.scale)
    m = ctx.results[0].metrics
    excluded = m["excluded_from_regression"]
    # the first words of each sentence: its first, and those whose spillover words would lie before it (older results
    # counted both as first_words_of_sentence, the oldest as first_word_of_sentence)
    first_words = excluded.get("first_words_of_sentence", excluded.get("first_word_of_sentence", 0)) + excluded.get(
        "missing_predictors", 0)
    prose = ctx.prose(words=f"{m['words']:,}", paper=ctx.spec["report"]["paper_finding"], first_words=first_words,
                      punctuated=excluded["with_punctuation"], regression_words=f"{m['regression_words']:,}")
    return [*prose, *reading_times_lines(ctx.results), "", *scoring_speed(ctx.results),
            f"![reading times]({ctx.link(figure)})", ""]


@section("fusion_dropout")
def fusion_dropout_section(ctx: SectionContext) -> list[str]:
    figure = ctx.figure("fusion_dropout")
    plot_curves(ctx.results, figure, f"fusion dropout schedules ({ctx.scale} scale)",
                "validation perplexity (e_j present)")
    evaluations = max(len(r.eval_curve) for r in ctx.results)
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
    mlp = next((r for r in ctx.results if r.values["fusion"] == "embedding_only"), ctx.results[0])
    sizes = {"hidden_size": FusionLSTMConfig.hidden_size, "projection_size": FusionLSTMConfig.projection_size}
    overrides = mlp.arguments.get("config_overrides")
    sizes.update(item.split("=") for item in (overrides or "").split(",") if item)
    none = f"{endpoints[BASELINE_FUSION]:.1f}" if BASELINE_FUSION in endpoints else "not run"
    return [*ctx.prose(budget=budget(ctx.results), mlp_sizes=f"{sizes['hidden_size']} → {sizes['projection_size']}",
                       endpoints=ctx.spec["endpoints"]["experiment"], none=none),
            *vector_sources_lines(ctx.results, endpoints.get(BASELINE_FUSION)), ""]


@section("prefix_similarity")
def prefix_similarity_section(ctx: SectionContext) -> list[str]:
    figure = ctx.figure("prefix_similarity")
    plot_similarity(ctx.results, figure, ctx.scale)
    return [*ctx.prose(), *markdown_table(similarity_rows(ctx.results)), "",
            f"![prefix similarity]({ctx.link(figure)})", ""]


# The evaluations of a context model with its context replaced (run_clm --eval_context_controls): column → metric
CONTROL_COLUMNS = {"context emptied": "eval_empty_context_perplexity",
                   "another document's context": "eval_other_document_perplexity"}


@section("document_context")
def document_context_section(ctx: SectionContext) -> list[str]:
    def reference(fusion: str) -> float | None:
        """The mean best dev perplexity over seeds of the plain runs of `fusion`: sentence-level, the encoder's e_j,
        nothing else changed."""
        values = [r.best_eval_perplexity for r in ctx.results
                  if is_plain(r.values, fusion)]
        return statistics.mean(values) if values else None

    none, concat = reference(BASELINE_FUSION), reference(PAPER_FUSION)
    # the control for what a fixed e_j does: concat with one constant vector, where it was run
    control = next((r.best_eval_perplexity for r in ctx.results if r.values.get("fusion_vectors") == "constant"),
                   None)
    controls = [c for c, metric in CONTROL_COLUMNS.items() if any(metric in r.metrics for r in ctx.results)]
    rows = [("run", "fusion", "context", "dev perplexity (best epoch)", f"vs {BASELINE_FUSION}", f"vs {PAPER_FUSION} (the paper)",
             *(["vs one constant vector (control)"] if control else []), *controls, "test perplexity",
             "train loss", "encoder sentences/s")]
    for r in sorted(ctx.results, key=lambda r: (r.values["fusion"] != BASELINE_FUSION, r.values.get("context_sentences", 0),
                                                r.run)):
        ppl, metrics = r.best_eval_perplexity, r.metrics
        test, speed = metrics.get("test_perplexity"), metrics.get("train_embedding_sentences_per_second")
        loss = metrics.get("train_loss")
        replaced = [metrics.get(CONTROL_COLUMNS[c]) for c in controls]
        rows.append((f"`{r.run}`", f"`{r.values['fusion']}`", context_label(r.values), f"{ppl:.1f}",
                     vs_baseline(ppl, none), change(ppl, concat) if concat else "—",
                     *([change(ppl, control)] if control else []),
                     *(f"{value:.1f} ({change(value, ppl)})" if value else "—" for value in replaced),
                     f"{test:.1f}" if test else "—", f"{loss:.2f}" if loss else "—", f"{speed:.1f}" if speed else "—"))
    train = ctx.results[0].metrics.get("train_samples", "?")
    figure = ctx.figure("document_context_curves")  # which runs learn sooner, and which overfit sooner
    plot_curves(ctx.results, figure, f"validation perplexity per epoch ({ctx.scale} scale)")
    return [*ctx.prose(budget=budget(ctx.results), train=f"{train:,}" if isinstance(train, int) else train),
            *markdown_table(rows), "", *seed_spread_lines(ctx.results), f"![validation curves]({ctx.link(figure)})", ""]


@section("document_reading_times")
def document_reading_times_section(ctx: SectionContext) -> list[str]:
    figure = ctx.figure("document_reading_times")
    plot_reading_times(ctx.results, figure, ctx.scale)
    # one seed each and runs that differ in more than the fusion: no means by fusion
    return [*ctx.prose(words=f"{ctx.results[0].metrics['words']:,}"), *reading_times_lines(ctx.results, False), "",
            *story_effect_lines(ctx.results), *reading_seed_lines(ctx.results),
            f"![reading times with the story]({ctx.link(figure)})", ""]


# Prose before the first section of a group
GROUP_INTROS = {"probes": lambda paper: [f"**The paper's probes.** {paper['probes']['note']}", ""]}


def build_section(found: dict[tuple[str, str], list[Result]], results_dir: Path, figures_dir: Path,
                  readme_dir: Path) -> str:
    """The generated results section (markdown) and the figures it links, from `found` (load_results of
    results_dir)."""
    paper = json.loads((EXPERIMENTS_DIR / "paper.json").read_text())
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
    for scale in SCALES:
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
              if "mean_surprisal_bits" in r.metrics and r.metrics.get("held_out")]
    if len(scored) < 2:
        return []
    figure = figures_dir / "fit_vs_quality.png"
    plot_fit_vs_quality(scored, figure)
    prose = load_spec("reading_times")["report"]["fit_vs_quality"]
    return [f"### {prose['title']}", "", fill(prose["text"], models=len(scored)), "",
            f"![fit against language-model quality]({link(figure)})", ""]


def write_reports(results_dir: Path, document: Path, readme: Path | None, figures_dir: Path,
                  speed: SpeedPages | None = None) -> list[Path]:
    """The results section of `document` and, where the results compare fusions in a fusion_table and `readme` is
    given, the headline of `readme`; with `speed`, the speed suite's pages (docs/speed.md's summary, bench/README.md's
    tables): one `write_pages`, so a refusal leaves every file as it was. A document that does not exist yet is
    created. Returns the files written."""
    document = Path(document)
    if not document.exists():
        document.parent.mkdir(parents=True, exist_ok=True)
        document.write_text(f"# Results\n\n{START}\n{END}\n", encoding="utf-8")

    results_dir, figures_dir = Path(results_dir).resolve(), Path(figures_dir).resolve()
    found = load_results(results_dir)

    def headline() -> str | None:
        try:
            return headline_text(found, readme, figures_dir, document)
        except NoHeadline as reason:
            logger.warning("%s keeps its headline: %s", readme, reason)
            return None

    section = lambda: build_section(found, results_dir, figures_dir, document.resolve().parent)  # noqa: E731
    parts = [GeneratedText(document, START, END, section)]
    parts += [GeneratedText(Path(readme), HEADLINE_START, HEADLINE_END, headline)] if readme else []
    return write_pages(parts + (speed.parts() if speed else []))
