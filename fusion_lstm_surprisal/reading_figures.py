"""The reading-time figure of run_surprisal.py: each model's surprisal against reading time with its fitted line,
and a bar of its ΔLL over the baseline regression (held out, with its interval and test)."""

import re
from pathlib import Path

import numpy as np


def plot(results: dict[str, dict], surprisals: dict[str, np.ndarray], rt: np.ndarray, path: Path):
    """Surprisal vs reading time with a fitted line per model, and a bar chart of ΔLL per model."""
    plt, fig, scatter, bars = reading_times_figure(len(results))
    read = np.isfinite(rt)  # words some reader read
    rt = rt[read]
    for name, values in surprisals.items():
        values = values[read]
        points = scatter.scatter(values, rt, s=3, alpha=0.25, label=f"{name} (r = {results[name]['pearson_r']:.3f})")
        slope, intercept = np.polyfit(values, rt, 1)
        xs = np.linspace(values.min(), values.max(), 50)
        scatter.plot(xs, intercept + slope * xs, color=points.get_facecolor()[0][:3], linewidth=2)
    scatter.set_xlabel("word surprisal (bits)")
    scatter.set_ylabel("mean reading time (ms)")
    draw_delta_bars(bars, list(results), list(results.values()))
    bars.set_title("gain over the baseline regression")
    save_reading_times_figure(plt, fig, scatter, path, markerscale=4)


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def reading_times_figure(models: int):
    """pyplot and the two panels of a reading-time figure (surprisal against reading time; ΔLL per model), the figure
    as tall as its `models` bar rows need, its layout constrained so that long model names stay inside it."""
    plt = pyplot()
    fig, (scatter, bars) = plt.subplots(1, 2, figsize=(12, max(4.0, 0.3 * models + 2)), layout="constrained")
    return plt, fig, scatter, bars


def save_reading_times_figure(plt, fig, scatter, path: Path, **legend):
    """The scatter's legend below it (one entry per model, as many as the bars, long names wrapped as the bars'),
    then the figure saved to `path`."""
    handles, labels = scatter.get_legend_handles_labels()
    scatter.legend(handles, [wrapped(label) for label in labels], fontsize="x-small", ncol=2, loc="upper center",
                   bbox_to_anchor=(0.5, -0.15), **legend)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def wrapped(name: str, width: int = 40) -> str:
    """A model's name in lines of about `width` characters, broken after a "/", "_", "-" or "+" (a name as long as
    a results path would otherwise push its panel out of the figure); a part longer than `width` stays whole."""
    lines = [""]
    for part in re.findall(r"[^/_+-]+[/_+-]*|[/_+-]+", name):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(lines)


def draw_delta_bars(axes, names: list[str], metrics: list[dict]):
    """A horizontal bar of ΔLL per model in 10⁻³ nats per word, the first model on top (its name stays readable however
    many there are): held out with its 95 % interval and the test's p beside it, or in-sample for results made before
    the held-out ΔLL was measured."""
    rows = np.arange(len(names))
    held_out = [m.get("held_out") for m in metrics]
    if all(held_out):
        values = np.array([h["delta_log_likelihood"] for h in held_out]) * 1000
        errors = np.abs(np.array([h["interval_95"] for h in held_out]).T * 1000 - values)
        axes.barh(rows, values, xerr=errors, capsize=3)
        axes.set_xlabel("held-out ΔLL (10⁻³ nats per word), 95 % interval")
        for row, h, right in zip(rows, held_out, values + errors[1]):  # the sign-flip test of "surprisal adds"
            if h.get("p_value") is not None:
                axes.annotate(f"p={h['p_value']:.2g}", (right, row), ha="left", va="center", fontsize=8,
                              xytext=(3, 0), textcoords="offset points")
        axes.margins(x=0.15)
    else:
        axes.barh(rows, [m["delta_log_likelihood"] * 1000 for m in metrics])
        axes.set_xlabel("in-sample ΔLL (10⁻³ nats per word)")
    axes.set_yticks(rows, [wrapped(name) for name in names])
    axes.invert_yaxis()
    axes.axvline(0, color="gray", linewidth=0.8)
