#!/usr/bin/env python
"""Reproduce the paper's experiments: one command per experiment, one results JSON per run, a report from them.

    python reproduce.py fusion_table --scale cpu     # all seven variants, none and concat with two seeds
    python reproduce.py limited_data --scale cpu     # perplexity vs the amount of training data
    python reproduce.py cross_domain --scale cpu     # the fusion_table models on books and news
    python reproduce.py reading_times --scale cpu    # their surprisal against Natural Stories reading times
    python reproduce.py report                       # docs/reproducing.md's results, the README's headline, figures

Experiments are JSON files in configuration/experiments/ (a name there, or a path); every run goes through
run_clm.py. A run with a results JSON is skipped, and a killed run resumes from its last checkpoint, so rerunning a
command continues a killed sweep; a run that another process is running (its lock, runs/<run>.lock) is skipped,
naming that process, so two commands on one results folder share the work. `--smoke_test` runs every run for two
steps on a few sentences, into `<results_dir>/smoke`, to check a configuration (e.g. the gpu scale) without its cost.
"""

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fusion_lstm_data.cli import argument_parser
from fusion_lstm_reproduction.experiments import (
    SCALES, SMOKE_TEST, check_run_ids, experiments_help, load_experiment, load_spec, run_experiment, summary,
)
from fusion_lstm_reproduction.report import write_reports
from fusion_lstm_reproduction.speed import SpeedPages
from fusion_lstm_training.precision import PRECISIONS, choose_precision, cpu_description, cpu_text


ROOT = Path(__file__).resolve().parent
logger = logging.getLogger("reproduce")


@dataclass
class ReproduceArguments:
    experiment: str = field(metadata={"help": "An experiment of configuration/experiments/ (listed below), a JSON "
                                              "file, or report (the docs' results section and figures)."})
    scale: str = field(default="cpu", metadata={"help": "cpu (what runs on 2 cores in under an hour per experiment), "
                                                        "gpu (the paper's sizes, one GPU lease) or large (the document "
                                                        "experiments, the strongest models 2 cores train: hours); "
                                                        "configuration/experiments/scales.json says what each is."})
    results_dir: str | None = field(default=None, metadata={
        "help": "Where results JSONs and runs go (default: outputs/, your own runs; results/ is the repository's "
                "record: pass --results_dir results to add to it). `report` reads results/ by default."})
    precision: str = field(default="auto", metadata={"help": "fp32, bf16, or auto: bf16 on a GPU or where a short "
                                                             "measurement finds it faster on this CPU, fp32 elsewhere. "
                                                             "Replaces the experiment configs' bf16."})
    data_dir: str | None = field(default=None, metadata={"help": "Read the experiments' data (../shared/data in their "
                                                                 "configs) from this folder instead, e.g. a copy "
                                                                 "carried to another machine."})
    encoder_name_or_path: str | None = field(default=None, metadata={"help": "The encoder folder of every new model "
                                                                             "(default: the packaged MiniLM)."})
    runs: list[str] | None = field(default=None, metadata={"help": "Only these runs of the experiment (their ids, as "
                                                                  "in the results file names)."})
    smoke_test: bool = field(default=False, metadata={"help": "Two steps per run on a few sentences, into "
                                                              "<results_dir>/smoke: checks a configuration."})
    results_doc: str | None = field(default=None, metadata={
        "help": "The document whose results section `report` writes (default: docs/reproducing.md for the "
                "repository's results/, else <results_dir>/report.md, created if missing)."})
    readme: str | None = field(default=None, metadata={
        "help": "The README whose headline table `report` writes (default: README.md for the repository's results/, "
                "else none: another results folder never rewrites the repository's pages)."})

    def __post_init__(self):
        if self.scale not in SCALES:
            raise ValueError(f"--scale {self.scale!r}: use one of {', '.join(SCALES)}.")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision {self.precision!r}: use one of {', '.join(PRECISIONS)}.")
        if self.experiment != "report":
            # an unknown, cut-short or scale-less experiment fails here, before the precision is measured (minutes
            # on a CPU where bf16 is slow)
            scales = load_spec(self.experiment)["scales"]
            if self.scale not in scales:
                raise ValueError(f"Experiment {self.experiment} has no scale {self.scale!r}; it has: "
                                 f"{', '.join(scales)}.")
        for flag in ("data_dir", "encoder_name_or_path"):
            if getattr(self, flag) and not Path(getattr(self, flag)).is_dir():
                raise FileNotFoundError(f"--{flag} {getattr(self, flag)}: no such folder.")


def default_results_dir(experiment: str) -> Path:
    """A user's runs go to outputs/ and never change the repository's record (results/), which report reads."""
    return ROOT / ("results" if experiment == "report" else "outputs")


def main(argv: list[str] | None = None):
    parser = argument_parser(ReproduceArguments, description=__doc__, usage="python reproduce.py EXPERIMENT "
                             "[--scale SCALE] [--runs RUN ...] [--results_dir DIR] [options]  (or --experiment NAME)",
                             epilog="experiments (the time is that of the repository's runs, on the machines their "
                                    f"results name):\n{experiments_help()}")
    argv = sys.argv[1:] if argv is None else argv
    if argv and not argv[0].startswith("-"):
        argv = ["--experiment", *argv]  # the experiment may come first, without its flag
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    # the experiments name their data relative to the repository: work from there, whatever the current folder, with
    # the paths given on the command line taken as given
    args.results_dir = str(Path(args.results_dir).resolve()) if args.results_dir else str(
        default_results_dir(args.experiment))
    ours = Path(args.results_dir) == ROOT / "results"
    args.results_doc = str(Path(args.results_doc).resolve()) if args.results_doc else str(
        ROOT / "docs" / "reproducing.md" if ours else Path(args.results_dir) / "report.md")
    args.readme = str(Path(args.readme).resolve()) if args.readme else (str(ROOT / "README.md") if ours else None)
    args.data_dir, args.encoder_name_or_path = (p and str(Path(p).resolve()) for p in (
        args.data_dir, args.encoder_name_or_path))
    if args.experiment and Path(args.experiment).is_file():
        args.experiment = str(Path(args.experiment).resolve())
    os.chdir(ROOT)
    logging.basicConfig(format="%(asctime)s - %(name)s - %(message)s", datefmt="%H:%M:%S", level=logging.INFO)

    results_dir = Path(args.results_dir) / ("smoke" if args.smoke_test else "")
    if args.experiment == "report":
        figures = results_dir / "figures"
        # the repository's own results also regenerate the speed pages from the bench's JSON
        speed = SpeedPages(ROOT / "bench" / "results", ROOT / "docs" / "speed.md", ROOT / "bench" / "README.md") if (
            ours) else None
        written = write_reports(results_dir, Path(args.results_doc), args.readme and Path(args.readme), figures,
                                speed)
        logger.info("wrote %s and the figures in %s", " and ".join(map(str, written)), figures)
        return
    # on a machine without CUDA (a gpu-scale check on a laptop) bf16 needs use_cpu
    overrides = {**SMOKE_TEST, "use_cpu": not torch.cuda.is_available()} if args.smoke_test else None
    if args.runs:  # before the precision is measured (minutes where bf16 is slow)
        check_run_ids(load_experiment(args.experiment, args.scale, results_dir, data_dir=args.data_dir,
                                      encoder=args.encoder_name_or_path), args.runs)
    started = time.perf_counter()
    precision = choose_precision(args.precision)
    results = run_experiment(args.experiment, args.scale, results_dir, overrides, progress=logger.info,
                             precision=precision, data_dir=args.data_dir, encoder=args.encoder_name_or_path,
                             only=args.runs)
    logger.info("%s (%s scale): %d runs have results in %s; this command took %.0f s on %s, %s", args.experiment,
                args.scale, len(results), results_dir / args.scale, time.perf_counter() - started,
                cpu_text(cpu_description()), precision)
    print("\n".join(summary(args.experiment, results)))


if __name__ == "__main__":
    from fusion_lstm_data.cli import run_command

    run_command(main)
