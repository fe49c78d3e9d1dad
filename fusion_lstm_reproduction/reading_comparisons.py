"""The reading-time sections' comparisons: each model's held-out ΔLL against none of its seed, a model reading its
story against not, a seed against the first (all paired by story), and the table of the reading-time results."""

import json
import statistics

from fusion_lstm_surprisal.reading_times import compare_held_out, held_out_text
from modeling_fusion_lstm import BASELINE_FUSION, FUSIONS

from .records import Result
from .results import by_fusion, device_text, is_plain, seed_groups
from .tables import markdown_table


def has_story_gains(result: Result) -> bool:
    """Whether a reading-time result holds its per-story held-out gains (results scored before they were stored do
    not), which every paired comparison needs."""
    return "by_group" in result.metrics.get("held_out", {})


def paired_by_story(model: Result, reference: Result) -> dict | None:
    """compare_held_out of two reading-time results (the model's held-out ΔLL minus the reference's, its interval and
    the paired sign-flip p), or None where either lacks the per-story gains."""
    if not (has_story_gains(model) and has_story_gains(reference)):
        return None
    return compare_held_out(model.metrics["held_out"], reference.metrics["held_out"])


def held_out_vs_none(results: list[Result]) -> dict[str, dict]:
    """Each model's held-out ΔLL against that of the plain none model of its seed (paired_by_story), for the runs
    whose results hold the per-story gains."""
    references = {r.values.get("seed"): r for r in results if is_plain(r.values) and has_story_gains(r)}
    return {r.run: paired_by_story(r, references[r.values.get("seed")])
            for r in results if not is_plain(r.values) and r.values.get("seed") in references
            and has_story_gains(r)}


def comparison_text(comparison: dict | None, scale: float = 1000, digits: int = 2) -> str:
    if comparison is None:
        return "—"
    low, high = comparison["interval_95"]
    return (f"{comparison['difference'] * scale:+.{digits}f} [{low * scale:.{digits}f}, {high * scale:.{digits}f}], "
            f"p = {comparison['p_value']:.3g}")


def reading_times_lines(results: list[Result], means: bool = True) -> list[str]:
    compared = held_out_vs_none(results)
    rows = [("model", "bits per word", "Pearson r", "Spearman ρ", "ΔLL held out [95 % interval]", "ΔLL in-sample",
             "surprisal coefficient (ms per bit)", *([f"held-out ΔLL vs `{BASELINE_FUSION}` [95 %]"] if compared else []))]
    for result in sorted(results, key=lambda r: (list(FUSIONS).index(r.values["fusion"]), r.run)):
        m = result.metrics
        rows.append((f"`{result.run}`", f"{m['mean_surprisal_bits']:.2f}", f"{m['pearson_r']:.4f}",
                     f"{m['spearman_rho']:.4f}",
                     held_out_text(m, scale=1000, digits=2),
                     f"{m['delta_log_likelihood'] * 1000:.2f}", f"{m['surprisal_coefficient_ms_per_bit']:.2f}",
                     *([comparison_text(compared.get(result.run))] if compared else [])))
    for metric, label in (("pearson_r", "Pearson r"), ("delta_log_likelihood", "ΔLL in-sample")) if means else ():
        by = {f: statistics.mean(v) for f, v in by_fusion(results, lambda r: r.metrics[metric]).items()}
        if len(by) > 1:
            scale = 1000 if metric == "delta_log_likelihood" else 1
            rows.append((f"mean {label}", ", ".join(f"`{f}` {v * scale:.4f}" for f, v in by.items()), "", "", "",
                         "", "", *([""] if compared else [])))
    spillover = {r.metrics.get("spillover", 1) for r in results}
    versus = (f" The last column: the model's held-out ΔLL minus that of `{BASELINE_FUSION}` of its seed, with the one-sided "
              "sign-flip p that it is larger, paired by story (`compare_held_out`).") if compared else ""
    return [*markdown_table(rows), "", "*Bits per word*: the model's mean word surprisal on the corpus (log2 of its "
            f"word perplexity). ΔLL in 10⁻³ nats per word; spillover: {', '.join(map(str, spillover))} "
            "previous word(s); held out: 10-fold cross-validation over stories (sentences where the stories are not "
            f"given), interval: bootstrap over them.{versus}"]


def story_effect_lines(results: list[Result]) -> list[str]:
    """For each model scored both reading its story and reading none of it (`_read0`): the held-out ΔLL of the one
    minus the other's, paired by story (paired_by_story), the story's own share of the model's fit."""
    with_story = {json.dumps(r.values, sort_keys=True): r for r in results}
    effects = []
    for without in results:
        values = dict(without.values)
        if values.pop("scored_context_sentences", None) != 0:
            continue
        story = with_story.get(json.dumps(values, sort_keys=True))
        if story and (comparison := paired_by_story(story, without)):
            effects.append(f"`{story.run}` {comparison_text(comparison)}")
    if not effects:
        return []
    return ["*Reading the story against not reading it* (each model's held-out ΔLL reading its story minus the same "
            "model's reading none of it, 10⁻³ nats per word [95 %], one-sided sign-flip p, paired by story): "
            f"{'; '.join(effects)}.", ""]


def reading_seed_lines(results: list[Result]) -> list[str]:
    """For each model trained with more than one seed: the held-out ΔLL of each later seed minus its first seed's,
    paired by story, the yardstick for the comparisons between models of one seed."""
    pairs = []
    for first, *others in seed_groups(results):
        for other in others:
            if comparison := paired_by_story(other, first):
                pairs.append(f"`{other.run}` minus `{first.run}` {comparison_text(comparison)}")
    if not pairs:
        return []
    return ["*Seed to seed* (the same model trained with another seed, its held-out ΔLL minus the first seed's, "
            f"10⁻³ nats per word [95 %], paired by story): {'; '.join(pairs)}.", ""]


def scoring_speed(results: list[Result]) -> list[str]:
    """How fast run_surprisal scored Natural Stories with each fusion (mean words/s over its models), where the
    reading_times results recorded it."""
    speeds = by_fusion([r for r in results if "words_per_second" in r.metrics],
                       lambda r: r.metrics["words_per_second"])
    if not speeds:
        return []
    where = device_text(results[0].machine)
    words = results[0].metrics["words"]
    cells = ", ".join(f"`{f}` {statistics.mean(speeds[f]):,.0f} words/s" for f in FUSIONS if f in speeds)
    return [f"Scoring surprisal (`run_surprisal.py`, the reading_times experiment) on Natural Stories ({words:,} "
            f"words) on the {where} that made these results: {cells}. A fusion model runs its encoder once per "
            "prefix, which dominates its time.", ""]
