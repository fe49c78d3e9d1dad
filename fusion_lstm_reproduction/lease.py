"""A GPU lease in one step. A session lent a GPU gets 15 device minutes: one command of at most 10 minutes, on a copy
of the working tree with at most 64 MiB in all, on a machine that reaches no registry and whose packages are older
than this project needs. `configuration/gpu_lease.json` says what runs there; this module prepares it here and
runs it there (gpu_lease.py is the command line):

    build_carry()   here: .carry/ holds the wheels the device lacks, the packaged MiniLM saved in float16 and the data
                    files the lease's experiments read; its size, with the rest of the tree, checked against the limit
    run_lease()     there: every run of the lease's experiments at its scale, several processes at a time on the one
                    GPU, inside a deadline: each distinct e_j cache is embedded once (run_clm --embed_only) and the
                    runs that read it train once it is there; runs without e_j start at once, the listed ones first.
                    Each finished run writes its results JSON as reproduce.py does; at the end the JSONs, the runs'
                    logs and a summary are packed into <out>/lease.tar.gz, to unpack into results/ (gpu_lease.py
                    unpack: lease_archive.py) and turn into tables with `python reproduce.py report`
"""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from fusion_lstm_data.files import read_json_object
from modeling_fusion_lstm.prefix_encoder_fusion_lstm import EncoderWindow

from .experiments import (
    EXPERIMENTS_DIR, ROOT, SHARED_DATA, SMOKE_TEST, STOPPING, execute, experiment_kind, is_finished, load_experiment,
    load_spec, map_config, run_script, shared_data_path, stop_running,
)


logger = logging.getLogger(__name__)
LEASE_FILE = ROOT / "configuration" / "gpu_lease.json"
CARRY = ROOT / ".carry"
MIB = 1024 * 1024
DATA_ARCHIVE = "data.tar.xz"
# the carried encoder's files that every run loads
ENCODER_FILES = ("config.json", "model.safetensors", "tokenizer_config.json")
# the run_clm arguments that decide which e_j a fusing run caches: runs that agree on them share one cache
EMBEDDING_ARGUMENTS = ("train_file", "validation_file", "test_file", "max_train_samples", "max_eval_samples",
                       "max_seq_length", "tokenizer_name", "encoder_name_or_path", "encoder_pooling", "fusion_context",
                       "fusion_context_fraction", "context_sentences", "context_as_tokens", "max_context_length",
                       "bf16", "fusion_vectors", "do_train", "do_eval", "do_predict")
# a run is not started with less time left than this, and packing the results needs this much at the end
MIN_RUN_SECONDS = 45
PACK_SECONDS = 15
# the scheduler wakes this often even when no run finishes: a signal the kernel hands to a worker thread runs its
# Python handler (run_lease's SIGTERM) only when the main thread next runs Python code, which a plain wait would put
# off until some run finished
POLL_SECONDS = 0.5


@dataclass
class Lease:
    """configuration/gpu_lease.json."""

    experiments: list[str]
    scale: str
    first: list[str]  # "experiment/run_id" started before the others, in this order
    workers: int  # trainings at a time on the one GPU
    deadline_seconds: int  # from the start of run_lease to the last run's stop
    carry_limit_mib: int  # what travels: the tree and the carry together
    device_python: str
    wheels: list[str]  # name==version of each package the device lacks or has too old
    wheel_platforms: list[str]
    skip: list[str] = field(default_factory=list)  # "experiment/run_id" left out of the lease (too slow for it)
    skip_why: str = ""
    about: str = ""


def load_lease(path: str | Path = LEASE_FILE) -> Lease:
    spec = read_json_object(path, "lease configuration", fields=("experiments", "scale", "wheels"))
    lease = Lease(**spec)
    for name in lease.experiments:
        if experiment_kind(load_spec(name)) != "train":
            raise ValueError(f"{path}: {name} is not a train experiment; a lease runs trainings.")
    if lease.workers < 1 or lease.deadline_seconds < MIN_RUN_SECONDS + PACK_SECONDS:
        raise ValueError(f"{path}: workers must be at least 1 and deadline_seconds at least "
                         f"{MIN_RUN_SECONDS + PACK_SECONDS}.")
    return lease


def data_files(lease: Lease) -> list[str]:
    """The files under SHARED_DATA that the lease's experiments read at its scale (relative to SHARED_DATA)."""
    scales = read_json_object(EXPERIMENTS_DIR / "scales.json", "scales file")
    found = set()
    for config in [scales[lease.scale], *(load_spec(name)["scales"][lease.scale] for name in lease.experiments)]:
        map_config(config, lambda value: found.add(shared_data_path(value)))
    return sorted(found - {None, ""})


def travelling_bytes(root: Path = ROOT) -> int:
    """What travels with every device call besides the carry: the files git tracks and the untracked ones it does
    not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=root, capture_output=True,
                            check=True).stdout.decode().split("\0")
    return sum((root / name).stat().st_size for name in listed if name and (root / name).is_file())


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def build_carry(folder: str | Path = CARRY, lease: Lease | None = None, encoder: str | None = None,
                data_dir: str | Path | None = None, download_wheels: bool = True) -> dict:
    """Fills `folder` with what the lease needs on the device, and checks that it fits: wheels/ (pip download for the
    device's Python, no dependencies), encoder/ (the encoder in float16), data.tar.xz (the lease's data files, under
    their paths below SHARED_DATA); writes manifest.json. Returns the manifest."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    import modeling_fusion_lstm

    lease = lease or load_lease()
    folder = Path(folder)
    data_dir = Path(data_dir or ROOT / SHARED_DATA)
    files = data_files(lease)
    missing = [name for name in files if not (data_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"The lease reads {', '.join(missing)}, not found under {data_dir}.")
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "wheels").mkdir(parents=True)
    if download_wheels:
        platforms = [flag for platform in lease.wheel_platforms for flag in ("--platform", platform)]
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", lease.device_python, "--implementation", "cp", *platforms,
                        "--platform", "any", "-d", str(folder / "wheels"), *lease.wheels], check=True)
    encoder = str(encoder or modeling_fusion_lstm.default_encoder_path())
    AutoModel.from_pretrained(encoder, dtype=torch.float16).save_pretrained(folder / "encoder")
    AutoTokenizer.from_pretrained(encoder).save_pretrained(folder / "encoder")
    # text packs to about a quarter: the data travels as one archive, unpacked by run_lease
    with tarfile.open(folder / DATA_ARCHIVE, "w:xz") as archive:
        for name in files:
            archive.add(data_dir / name, arcname=name)
    parts = {"wheels": folder_bytes(folder / "wheels"), "encoder": folder_bytes(folder / "encoder"),
             "data": (folder / DATA_ARCHIVE).stat().st_size}
    manifest = {"lease": lease.experiments, "scale": lease.scale, "wheels": sorted(p.name for p in (folder / "wheels")
                                                                                  .glob("*.whl")),
                "encoder": encoder, "data": files, "bytes": parts, "carry_bytes": sum(parts.values()),
                "tree_bytes": travelling_bytes(), "limit_bytes": lease.carry_limit_mib * MIB}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    total = manifest["carry_bytes"] + manifest["tree_bytes"]
    if total > manifest["limit_bytes"]:
        sizes = ", ".join(f"{k} {v / MIB:.1f} MiB" for k, v in {**parts, "the tree": manifest["tree_bytes"]}.items())
        raise ValueError(f"The carry and the tree come to {total / MIB:.1f} MiB, over the device's "
                         f"{lease.carry_limit_mib} MiB ({sizes}): carry fewer wheels or data files.")
    logger.info("%s: %.1f MiB carried (%s) + %.1f MiB of tree, limit %d MiB", folder, manifest["carry_bytes"] / MIB,
                ", ".join(f"{k} {v / MIB:.1f}" for k, v in parts.items()), manifest["tree_bytes"] / MIB,
                lease.carry_limit_mib)
    return manifest


def embedding_group(arguments: dict) -> str | None:
    """Which e_j cache a run fills (runs that agree share one), None for a run that caches none; an argument a run
    leaves out counts as run_clm's default."""
    from dataclasses import MISSING, fields

    from fusion_lstm_training.clm import DataTrainingArguments, ModelArguments
    from fusion_lstm_training.vectors import needs_model_encoder
    from modeling_fusion_lstm import FusionLSTMConfig

    defaults = {f.name: f.default for group in (ModelArguments, DataTrainingArguments) for f in fields(group)
                if f.default is not MISSING}
    values = {k: arguments.get(k, defaults.get(k)) for k in ("fusion", *EMBEDDING_ARGUMENTS)}
    if not FusionLSTMConfig(fusion=values["fusion"]).uses_fusion or not needs_model_encoder(values["fusion_vectors"]):
        return None
    return json.dumps({k: values[k] for k in EMBEDDING_ARGUMENTS}, sort_keys=True)


class Clock:
    """The lease's deadline."""

    def __init__(self, seconds: float):
        self.started = time.monotonic()
        self.end = self.started + seconds

    def left(self) -> float:
        return self.end - time.monotonic() - PACK_SECONDS

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def run_lease(lease: Lease | None = None, carry: str | Path = CARRY, out: str | Path | None = None,
              smoke_test: bool = False, only: list[str] | None = None, workers: int | None = None,
              results_dir: str | Path | None = None, deadline: float | None = None) -> dict:
    """Every run of the lease's experiments that has no results JSON yet, inside the lease's deadline (see the
    module's text); `only`: just these "experiment/run_id"; `smoke_test`: two steps per run on a few sentences, into
    <results_dir>/smoke, on whatever device there is; `deadline`: seconds instead of the lease's (what is left of a
    session's device time). Returns the summary, also written to <out>/lease.json beside <out>/lease.tar.gz."""
    lease = lease or load_lease()
    carry = Path(carry)
    check_carry(carry)
    workers = lease.workers if workers is None else workers
    deadline = lease.deadline_seconds if deadline is None else deadline
    if workers < 1:
        raise ValueError(f"--workers {workers}: at least 1 training at a time (the lease's default: {lease.workers}).")
    if not deadline >= MIN_RUN_SECONDS + PACK_SECONDS:
        raise ValueError(f"--deadline {deadline}: at least {MIN_RUN_SECONDS + PACK_SECONDS} s, what one run and the "
                         f"packing need (the lease's default: {lease.deadline_seconds} s).")
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise FileExistsError(f"--out {out} is a file: name a folder (the device's $OUT).")

    import torch

    from .experiments import gpu_name

    clock = Clock(deadline)
    cuda = torch.cuda.is_available()
    results_dir = Path(results_dir or ROOT / "results") / ("smoke" if smoke_test else "")
    # unpacked beside the results, not into the carry: the carry travels again with the next device call
    data_dir = results_dir / lease.scale / "lease-data"
    if not data_dir.is_dir():
        with tarfile.open(carry / DATA_ARCHIVE, "r:xz") as archive:
            archive.extractall(data_dir, filter="data")
    out = Path(out or results_dir / lease.scale)
    out.mkdir(parents=True, exist_ok=True)
    overrides = {**SMOKE_TEST, "use_cpu": not cuda} if smoke_test else None
    precision = "bf16" if cuda else "fp32"  # bf16 autocast is fast on a GPU; on a CPU it may not be (precision.py)
    experiments = {name: load_experiment(name, lease.scale, results_dir, precision, data_dir, str(carry / "encoder"))
                   for name in lease.experiments}
    runs = [(experiment, run) for experiment in experiments.values() for run in experiment.runs
            if (only is None or f"{experiment.name}/{run.id}" in only)
            and f"{experiment.name}/{run.id}" not in lease.skip]
    if only is not None and len(runs) != len(set(only) - set(lease.skip)):
        known = [f"{e.name}/{r.id}" for e in experiments.values() for r in e.runs]
        raise ValueError(f"Unknown runs {sorted(set(only) - set(known))}; the lease's runs are: {', '.join(known)}.")
    order = {key: i for i, key in enumerate(lease.first)}
    runs.sort(key=lambda pair: order.get(f"{pair[0].name}/{pair[1].id}", len(order)))
    # each training process gets its share of the cores
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    summary = {"gpu": gpu_name(), "scale": lease.scale, "smoke_test": smoke_test, "workers": workers,
               "deadline_seconds": deadline, "versions": versions(), "embed": {}, "runs": {}}
    logger.info("lease: %d runs of %s at %s scale on %s, %d at a time, %d s", len(runs), ", ".join(experiments),
                lease.scale, summary["gpu"] or "CPU", workers, summary["deadline_seconds"])

    todo = [(e, r) for e, r in runs if not is_finished(results_dir, e, r)]
    summary["runs"].update({f"{e.name}/{r.id}": {"status": "done before"} for e, r in runs if (e, r) not in todo})
    summary["runs"].update({key: {"status": "skipped: the lease's skip list"} for key in lease.skip
                            if only is None or key in only})
    STOPPING.clear()
    previous = signal.signal(signal.SIGTERM, interrupt)  # `timeout` and a machine going back send SIGTERM
    try:
        schedule(lease_tasks(todo, results_dir, overrides, clock, summary), workers, clock)
    finally:  # whatever finished comes back
        signal.signal(signal.SIGTERM, previous)
        summary["seconds"] = round(clock.elapsed(), 1)
        pack(summary, results_dir, lease, out)
    return summary


def check_carry(carry: Path):
    """The carry holds what every run reads (its manifest, the encoder's files, the data), or nothing starts."""
    if not (carry / "manifest.json").is_file():
        raise FileNotFoundError(f"{carry} holds no carry (manifest.json): build it with `python gpu_lease.py carry`.")
    missing = [name for name in (*(f"encoder/{f}" for f in ENCODER_FILES), DATA_ARCHIVE) if not (carry / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{carry} lacks {', '.join(missing)}: every run would fail. Build the carry again with "
                                "`python gpu_lease.py carry`.")


def interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def versions() -> dict:
    import datasets
    import torch
    import transformers

    return {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
            "datasets": datasets.__version__, "cuda": torch.version.cuda}


@dataclass
class Task:
    """One process of the lease: a run's training, or the embedding of one e_j cache (run_clm --embed_only) that the
    runs reading it wait for."""

    key: str  # "experiment/run_id", or "embed <group>"
    work: Callable[[], dict]  # runs it, returns its record ({"status": "done", …} or the reason it did not finish)
    record: dict  # summary["runs"] or summary["embed"]: where its outcome goes
    name: str  # its name there
    needs: list[str] = field(default_factory=list)  # keys of the tasks that must be done first


def lease_tasks(runs: list, results_dir: Path, overrides: dict | None, clock: Clock, summary: dict) -> list[Task]:
    """The embedding of each distinct e_j cache (by the first run that reads it; a cache joined from several windows
    after its parts), then the trainings in the given order, each after the cache it reads."""
    embeds, trains = {}, []
    for experiment, run in runs:
        arguments = {**run.arguments, **(overrides or {})}
        group = embedding_group(arguments)
        needs = []
        if group is not None:
            if group not in embeds:
                parts = [embedding_group(part_arguments(arguments, part))
                         for part in EncoderWindow(arguments["fusion_context"]).parts] if len(
                    EncoderWindow(arguments.get("fusion_context", "prefix")).parts) > 1 else []
                embeds[group] = Task(f"embed {group}", partial(embed_run, experiment, run, arguments, clock),
                                     summary["embed"], f"{experiment.name}/{run.id}",
                                     [f"embed {p}" for p in parts if p in embeds])
            needs = [f"embed {group}"]
        trains.append(Task(f"{experiment.name}/{run.id}", partial(train_run, experiment, run, results_dir, overrides,
                                                                  clock), summary["runs"], f"{experiment.name}/{run.id}",
                           needs))
    return list(embeds.values()) + trains


def part_arguments(arguments: dict, part) -> dict:
    """The arguments of a run that fuses one part (an EncoderWindow) of a run's context alone: a part that never reads
    the document is cached as a sentence-level run's (EmbeddingCache.attach)."""
    alone = {**arguments, "fusion_context": part.mode}
    if not part.reads_document:
        for name in ("context_sentences", "context_as_tokens", "max_context_length"):
            alone.pop(name, None)
    return alone


def schedule(tasks: list[Task], workers: int, clock: Clock):
    """Runs the tasks `workers` at a time, each as soon as a worker is free and the tasks it needs are done, in the
    given order otherwise; a task whose need failed does not run. Interrupted, it ends the tasks running and starts
    no other."""
    pending, running, done = list(tasks), {}, set()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            loop(pool, pending, running, done, workers)
        except KeyboardInterrupt:  # or SIGTERM (run_lease): the runs end now, and what finished is packed
            clock.end = time.monotonic()  # a task about to start its process finds no time left
            stop_running()
            for future, task in running.items():  # each returns at once, its process ended (or it had finished)
                try:
                    outcome = future.result()
                except Exception:  # noqa: BLE001 - stopped either way
                    outcome = {}
                done = outcome.get("status") == "done"
                task.record[task.name] = outcome if done else {"status": "stopped: the lease was interrupted"}
            for task in pending:
                task.record[task.name] = {"status": "not started: the lease was interrupted"}
            raise


def loop(pool, pending: list[Task], running: dict, done: set, workers: int):
    """schedule's loop: start what may start, wait for one to finish, record it."""
    while pending or running:
        for task in list(pending):
            failed = [need for need in task.needs if need not in done and need not in {t.key for t in pending}
                      and need not in {t.key for t in running.values()}]
            if failed:
                task.record[task.name] = {"status": f"not run: {', '.join(failed)} did not finish"}
                pending.remove(task)
        for task in [t for t in pending if all(need in done for need in t.needs)]:
            if len(running) >= workers:
                break
            pending.remove(task)
            running[pool.submit(task.work)] = task
        if not running:
            break
        finished, _ = wait(running, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
        for future in finished:
            task = running[future]  # left in `running` until recorded: an interruption in between still records it
            try:
                task.record[task.name] = future.result()
            except Exception as error:  # a bug of the lease itself: recorded, and the other tasks go on
                task.record[task.name] = {"status": f"{type(error).__name__}: {error}"}
            if task.record[task.name]["status"] == "done":
                done.add(task.key)
            del running[future]


def embed_run(experiment, run, arguments: dict, clock: Clock) -> dict:
    """run_clm --embed_only with a run's arguments: the run's e_j cache, nothing trained."""
    output_dir = Path(arguments["output_dir"]).parent / f"embed-{run.id}"
    if clock.left() < 1:
        return {"status": "not started: no time left"}
    started = time.monotonic()
    try:
        run_script("clm", {**arguments, "embed_only": True, "output_dir": str(output_dir), "overwrite_output_dir": True},
                   output_dir, f"embed-{run.id}", timeout=max(clock.left(), 1), log=output_dir / "log.txt")
        status = "done"
    except RuntimeError as error:  # RunTimeout too
        status = str(error)
    seconds = round(time.monotonic() - started, 1)
    logger.info("lease: e_j cache of %s/%s: %s in %.0f s (%.0f s left)", experiment.name, run.id, status, seconds,
                clock.left())
    return {"status": status, "seconds": seconds}


def train_run(experiment, run, results_dir: Path, overrides: dict | None, clock: Clock) -> dict:
    """A run's training, stopped at the deadline; not started with less than MIN_RUN_SECONDS left."""
    key = f"{experiment.name}/{run.id}"
    if clock.left() < MIN_RUN_SECONDS:
        return {"status": "not started: too little time left"}
    started = time.monotonic()
    log = Path(run.arguments["output_dir"]) / "log.txt"
    logger.info("lease: %s: started (%.0f s left)", key, clock.left())
    try:
        result = execute(experiment, run, results_dir, overrides, timeout=clock.left(), log=log)
        status = {"status": "done", "validation_perplexity": result["best_eval_perplexity"]}
    except RuntimeError as error:  # RunTimeout too
        status = {"status": str(error)}
    status["seconds"] = round(time.monotonic() - started, 1)
    logger.info("lease: %s: %s (%.0f s; %.0f s left)", key, status.get("validation_perplexity", status["status"]),
                status["seconds"], clock.left())
    return status


def pack(summary: dict, results_dir: Path, lease: Lease, out: Path):
    """<out>/lease.tar.gz: the results JSONs of the lease's experiments, each run's arguments and log, the summary
    (lease.json, also beside it), by their paths below results_dir."""
    scale_dir = results_dir / lease.scale
    (scale_dir / "lease.json").write_text(json.dumps(summary, indent=2))
    (out / "lease.json").write_text(json.dumps(summary, indent=2))
    with tarfile.open(out / "lease.tar.gz", "w:gz") as archive:
        archive.add(scale_dir / "lease.json", arcname=f"{lease.scale}/lease.json")
        for name in lease.experiments:
            folder = scale_dir / name
            for path in sorted(folder.glob("*.json")) + sorted(folder.glob("runs/*/log.txt")) + sorted(
                    folder.glob("runs/*/arguments.json")):
                archive.add(path, arcname=str(path.relative_to(results_dir)))
    done = sum(1 for r in summary["runs"].values() if r.get("status") == "done")
    logger.info("lease: %d of %d runs done in %.0f s; packed into %s", done, len(summary["runs"]), summary["seconds"],
                out / "lease.tar.gz")
