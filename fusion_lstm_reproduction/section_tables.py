"""The tables of the experiments' sections of the report, each from its experiment's results."""

import statistics
from collections import defaultdict

from fusion_lstm_training.vectors import SOURCES
from modeling_fusion_lstm import BASELINE_FUSION, FUSIONS, PAPER_FUSION

from .records import Result
from .results import by_fusion, seed_groups, standard_perplexity
from .tables import change, markdown_table, spread, vs_baseline


def fusion_table_lines(results: list[Result], paper: dict) -> list[str]:
    best = by_fusion(results, lambda r: r.best_eval_perplexity)
    test = by_fusion(results, lambda r: r.metrics.get("test_perplexity"))
    loss = by_fusion(results, lambda r: r.metrics.get("train_loss"))
    speed = by_fusion(results, lambda r: r.metrics.get("train_tokens_per_second"))
    none = statistics.mean(best[BASELINE_FUSION]) if BASELINE_FUSION in best else None
    paper_none = paper["fusion_table"].get(BASELINE_FUSION)
    rows = [("variant", "paper (its unit)", "paper, standard perplexity", "change (paper)",
             "validation perplexity (best epoch)", f"change vs {BASELINE_FUSION}", "test perplexity", "train loss", "train tokens/s")]
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
    others = [f for f in fusions if f != BASELINE_FUSION]
    rows = [(first, *extra_header, *(f"`{f}`" for f in fusions), *(f"`{f}` vs {BASELINE_FUSION}" for f in others))]
    for label, per_fusion in groups.items():
        means = {f: statistics.mean(v) for f, v in per_fusion.items()}
        rows.append((label, *(extra or {}).get(label, ()), *(spread(per_fusion[f]) if f in per_fusion else "—"
                                                               for f in fusions),
                     *(vs_baseline(means.get(f), means.get(BASELINE_FUSION)) for f in others)))
    return markdown_table(rows)


def limited_data_lines(results: list[Result]) -> tuple[list[str], dict]:
    sizes = defaultdict(lambda: defaultdict(list))  # train size → fusion → perplexities
    for result in results:
        sizes[result.values["max_train_samples"]][result.values["fusion"]].append(result.best_eval_perplexity)
    epochs = {r.values["max_train_samples"]: r.arguments.get("num_train_epochs") for r in results}
    groups = {f"{n:,}": sizes[n] for n in sorted(sizes)}
    lines = fusion_columns_lines("training sentences", groups, {f"{n:,}": (f"{epochs[n]}",) for n in sizes},
                                 ("epochs",))
    curves = defaultdict(dict)  # fusion → train size → mean perplexity
    for n, per_fusion in sizes.items():
        for fusion, values in per_fusion.items():
            curves[fusion][n] = statistics.mean(values)
    return lines, dict(curves)


def cross_domain_lines(results: list[Result], table_results: list[Result]) -> tuple[list[str], dict]:
    domains = defaultdict(lambda: defaultdict(list))  # domain → fusion → perplexities
    for result in table_results:
        if result.values["fusion"] in {r.values["fusion"] for r in results}:
            domains["wikipedia (validation)"][result.values["fusion"]].append(result.best_eval_perplexity)
    for result in results:
        domains[result.values["domain"]][result.values["fusion"]].append(result.metrics["eval_perplexity"])
    table = {domain: {f: statistics.mean(v) for f, v in per_fusion.items()} for domain, per_fusion in domains.items()}
    return fusion_columns_lines("evaluated on", domains), table


def fusion_dropout_lines(results: list[Result]) -> list[str]:
    """Each schedule: the best dev perplexity over the evaluations, and the final model's with e_j and with every
    e_j zeroed."""
    none = next((r.best_eval_perplexity for r in results if r.values["fusion"] == BASELINE_FUSION), None)
    rows = [("run", "schedule", "dropout", "best dev perplexity", f"vs {BASELINE_FUSION}", "final, with e_j", "final, e_j zeroed",
             f"zeroed vs {BASELINE_FUSION}")]
    for r in sorted(results, key=lambda r: (r.values["fusion"] != BASELINE_FUSION, r.run)):
        values, metrics = r.values, r.metrics
        zeroed = metrics.get("eval_without_fusion_perplexity")
        rows.append((f"`{r.run}`", values.get("fusion_dropout_schedule", "—"),
                     values.get("fusion_dropout_mode", "—" if values["fusion"] == BASELINE_FUSION else "vector"),
                     f"{r.best_eval_perplexity:.1f}", vs_baseline(r.best_eval_perplexity, none),
                     f"{metrics['eval_perplexity']:.1f}", f"{zeroed:.1f}" if zeroed else "—",
                     vs_baseline(zeroed, none)))
    return markdown_table(rows)


def sub_prefix_lines(results: list[Result], endpoints: dict[str, float]) -> tuple[list[str], dict]:
    """Perplexity per feeder and k; the endpoints (none, concat with the whole prefix) from another experiment.
    Returns the table and, per feeder, {k: perplexity} with the endpoints at k = 0 and 1."""
    none, concat = endpoints.get(BASELINE_FUSION), endpoints.get(PAPER_FUSION)
    rows = [("feeder", "k", "encoder reads", "dev perplexity", f"vs {BASELINE_FUSION}", "vs concat (whole prefix)")]
    reads = {"subr": r"tokens 0..min(j, k·\|S\|)", "subl": r"tokens k·\|S\|..j"}  # \| : a pipe inside a cell
    curves = {"subr": {}, "subl": {}}
    for r in sorted(results, key=lambda r: (r.values["fusion_context"], r.values["fusion_context_fraction"])):
        context, k = r.values["fusion_context"], r.values["fusion_context_fraction"]
        ppl = r.best_eval_perplexity
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


def vector_sources_lines(results: list[Result], none: float | None) -> list[str]:
    """Rows: vector sources; columns: the artefact-only MLP and concat."""
    table = defaultdict(dict)
    for r in results:
        table[source_name(r.values)][r.values["fusion"]] = r.best_eval_perplexity
    rows = [("vector source", "artefact-only MLP (no LSTM)", "concat", f"concat vs {BASELINE_FUSION}")]
    for source in [s for s in SOURCE_LABELS if s in table] + [s for s in table if s not in SOURCE_LABELS]:
        row = table[source]
        mlp, concat = row.get("embedding_only"), row.get("concat")
        rows.append((SOURCE_LABELS.get(source, source), f"{mlp:.1f}" if mlp else "—",
                     f"{concat:.1f}" if concat else "—", vs_baseline(concat, none)))
    return markdown_table(rows)


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
        label = "none (the sentence alone)" if values["fusion"] == BASELINE_FUSION else "the prefix, by the encoder (the paper)"
    changes = [said(values[key]) for key, said in TRAINING_CHANGES.items() if key in values]
    return ", ".join([label, *filter(None, changes)])


def seed_spread_lines(results: list[Result]) -> list[str]:
    """For each run trained with more than one seed: its best dev perplexities and how far apart they are, the
    yardstick for the differences between runs of one seed."""
    spreads = []
    for runs in seed_groups(results):
        values = [r.best_eval_perplexity for r in runs]
        names = " / ".join(f"`{r.run}`" for r in runs)
        spreads.append(f"{names}: {' / '.join(f'{v:.1f}' for v in values)} "
                       f"({(max(values) / min(values) - 1) * 100:.1f} % apart)")
    if not spreads:
        return []
    return [f"*Seed to seed* (one run trained again with another seed; a difference between runs of one seed that is "
            f"smaller than this is within what the seed alone changes): {'; '.join(spreads)}.", ""]
