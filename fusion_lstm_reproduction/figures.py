"""The report's figures: one function per figure, each drawing from results (or the numbers a section computed from
them) into a PNG. report.py's sections call them."""

from pathlib import Path

from fusion_lstm_surprisal.reading_figures import (
    draw_delta_bars, pyplot, reading_times_figure, save_reading_times_figure,
)
from modeling_fusion_lstm import BASELINE_FUSION, PAPER_FUSION

from .records import Result


def finish(fig, ax, path: Path, xlabel: str, ylabel: str, title: str):
    """Labels, legend and grid of a one-axes figure, saved to `path` as PNG."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)


def plot_curves(results: list[Result], path: Path, title: str, ylabel: str = "validation perplexity"):
    """Dev perplexity at every evaluation, one line per run."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in sorted(results, key=lambda r: r.run):
        curve = r.eval_curve
        ax.plot([c["epoch"] for c in curve], [c["eval_perplexity"] for c in curve], marker="o", label=r.run)
    ax.set_yscale("log")
    finish(fig, ax, path, "epoch", ylabel, title)


def plot_changes(changes: dict[str, dict[str, float]], path: Path, title: str, paper: float | None = None):
    """Grouped bars of the change in perplexity against the baseline, in %: one group per row of `changes` (a variant or
    a domain), one bar per column; `paper`: the paper's change for concat, drawn as a dashed line."""
    plt = pyplot()
    groups = list(changes)
    columns = list(dict.fromkeys(c for row in changes.values() for c in row))
    width = 0.8 / max(len(columns), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(groups) * max(len(columns), 1)), 4))
    for i, column in enumerate(columns):
        xs = [g + (i - (len(columns) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, [changes[group].get(column, float("nan")) for group in groups], width, label=column)
    ax.axhline(0, color="black", linewidth=0.8)
    if paper is not None:
        ax.axhline(paper, color="gray", linestyle="--", linewidth=1, label=f"paper, concat ({paper:+.1f} %)")
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(f"perplexity change vs {BASELINE_FUSION} (%)")
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_limited_data(curves: dict, path: Path, scale: str):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for fusion, curve in curves.items():
        sizes = sorted(curve)
        ax.plot(sizes, [curve[n] for n in sizes], marker="o", label=fusion)
    ax.set_xscale("log")
    finish(fig, ax, path, "training sentences", "validation perplexity (best epoch)", f"limited data ({scale} scale)")


def plot_sub_prefix(curves: dict, endpoints: dict, path: Path, scale: str):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for context, curve in curves.items():
        ks = sorted(curve)
        ax.plot(ks, [curve[k] for k in ks], marker="o", label=context)
    for name, style in ((BASELINE_FUSION, ":"), (PAPER_FUSION, "--")):
        if name in endpoints:
            ax.axhline(endpoints[name], color="gray", linestyle=style, linewidth=1, label=f"{name} (fusion_table)")
    finish(fig, ax, path, "k (the crop point is k·|S|)", "validation perplexity (best epoch)",
           f"sub-prefix feeders ({scale} scale); k=0/1 are the endpoints")


def plot_similarity(results: list[Result], path: Path, scale: str, min_count: int = 20):
    """Cosine of e_j to e_{j-1} and to the last prefix's e, by prefix length (lengths with ≥ min_count prefixes)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        curves = r.metrics["curves"]
        for key, style in (("previous", "-"), ("last", "--")):
            points = sorted((int(n), c[key]) for n, c in curves.items() if c.get(f"{key}_count", 0) >= min_count)
            ax.plot([p[0] for p in points], [p[1] for p in points], style,
                    label=f"{r.metrics['encoder_pooling']}: cos(e_j, e_{'j-1' if key == 'previous' else 'last'})")
    finish(fig, ax, path, "prefix length (tokens 0..j)", "mean cosine similarity",
           f"prefix embeddings along the sentence ({scale} scale, validation)")


def plot_reading_times(results: list[Result], path: Path, scale: str):
    """Binned surprisal vs reading time with each model's fitted line, and ΔLL per model."""
    plt, fig, scatter, bars = reading_times_figure(len(results))
    for result in results:
        m = result.metrics
        xs = [b["surprisal"] for b in m["binned"]]
        points = scatter.plot(xs, [b["rt"] for b in m["binned"]], "o", markersize=4, label=result.run)[0]
        fit = m["linear_fit"]
        scatter.plot([min(xs), max(xs)], [fit["intercept_ms"] + fit["ms_per_bit"] * x for x in (min(xs), max(xs))],
                     color=points.get_color(), linewidth=1.5)
    scatter.set_xlabel("word surprisal (bits), 20 equally filled bins")
    scatter.set_ylabel("mean reading time (ms)")
    scatter.set_title(f"Natural Stories ({scale} scale)")
    names = [r.run for r in results]
    draw_delta_bars(bars, names, [r.metrics for r in results])
    bars.set_title("gain of surprisal over the baseline regression")
    save_reading_times_figure(plt, fig, scatter, path)


def plot_fit_vs_quality(results: list[Result], path: Path):
    """Each scored model's held-out ΔLL (with its 95 % interval) against its mean word surprisal on the corpus, one
    colour per scale and experiment: do better language models fit the reading times better?"""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups: dict[str, list[Result]] = {}
    for r in results:
        groups.setdefault(f"{r.experiment} ({r.scale} scale)", []).append(r)
    for label, members in sorted(groups.items()):
        xs = [r.metrics["mean_surprisal_bits"] for r in members]
        held_out = [r.metrics["held_out"] for r in members]
        ys = [h["delta_log_likelihood"] * 1000 for h in held_out]
        errors = [[y - h["interval_95"][0] * 1000 for y, h in zip(ys, held_out)],
                  [h["interval_95"][1] * 1000 - y for y, h in zip(ys, held_out)]]
        ax.errorbar(xs, ys, yerr=errors, fmt="o", capsize=3, alpha=0.8, label=label)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.invert_xaxis()  # better language models to the right
    finish(fig, ax, path, "mean word surprisal on the corpus (bits per word; better models to the right)",
           "held-out ΔLL (10⁻³ nats per word)", "reading-time fit against language-model quality")


def plot_learning_curve(curve, path: Path, scale: str):
    """Left: each variant's converged dev perplexity against the training sentences (log axes; the line through the
    seeds' means, each seed a dot). Right: each fused variant's change against none, at convergence (solid) and after
    one epoch (dashed). `curve`: a learning_curve.Curve."""
    from .learning_curve import change_curves, converged

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {}
    for name in curve.variants:
        sizes = [n for n in curve.sizes if curve.values(name, n, converged)]
        line = left.plot(sizes, [curve.mean(name, n) for n in sizes], marker="o", label=name)[0]
        colours[name] = line.get_color()
        for n in sizes:
            seeds = curve.values(name, n, converged)
            left.plot([n] * len(seeds), seeds, ".", color=colours[name], alpha=0.6)
    left.set_xscale("log")
    left.set_yscale("log")
    plain = plt.matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    left.yaxis.set_major_formatter(plain)
    left.yaxis.set_minor_formatter(plain)
    for label, points in change_curves(curve).items():
        name, when = label.rsplit(", ", 1)
        sizes = sorted(points)
        converged_line = when == "converged"
        right.plot(sizes, [points[n] for n in sizes], marker="o", color=colours.get(name),
                   linestyle="-" if converged_line else "--", fillstyle="full" if converged_line else "none",
                   label=label)
    right.axhline(0, color="black", linewidth=0.8)
    right.set_xscale("log")
    for ax, ylabel, title in ((left, "validation perplexity (best evaluation)", f"learning curves ({scale} scale)"),
                              (right, f"perplexity change vs {BASELINE_FUSION} (%)", "the gain at convergence and early")):
        ax.set_xlabel("training sentences")
        ax.set_xticks(curve.sizes, [f"{n:,}" for n in curve.sizes])  # the sizes run, not the log axis' own ticks
        ax.xaxis.set_minor_formatter(plt.matplotlib.ticker.NullFormatter())
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
