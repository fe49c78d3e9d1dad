"""The GPU lease prepared here: the carry (what travels, its size), the runs on whatever device there is (a smoke
test on CPU), the packed results and their report."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel
from transformers.utils.versions import require_version

from fusion_lstm_reproduction.experiments import ROOT, SHARED_DATA, load_experiment, relocated
from fusion_lstm_reproduction.lease import (
    DATA_ARCHIVE, MIB, Clock, Lease, build_carry, data_files, embedding_group, lease_tasks, load_lease, run_lease,
)
from fusion_lstm_reproduction.lease_archive import unpack
from fusion_lstm_reproduction.report import write_reports


DATA = ROOT / SHARED_DATA


@pytest.fixture(scope="module")
def carry(tmp_path_factory):
    """The lease's carry without its wheels (pip download needs the registry; the wheel list is checked apart)."""
    folder = tmp_path_factory.mktemp("lease") / ".carry"
    build_carry(folder, download_wheels=False)
    return folder


def test_the_carry_holds_the_encoder_in_float16_and_the_data_the_runs_read(carry):
    lease = load_lease()
    manifest = json.loads((carry / "manifest.json").read_text())
    encoder = AutoModel.from_pretrained(carry / "encoder")
    assert next(encoder.parameters()).dtype == torch.float16
    assert AutoConfig.from_pretrained(carry / "encoder").hidden_size == 384
    # every data file any run of the lease reads is in the archive, byte for byte
    with tarfile.open(carry / DATA_ARCHIVE) as archive:
        names = sorted(archive.getnames())
        assert names == manifest["data"] == data_files(lease)
        assert archive.extractfile("wikipedia/train.txt").read() == (DATA / "wikipedia" / "train.txt").read_bytes()
    read = set()
    for name in lease.experiments:
        for run in load_experiment(name, lease.scale, carry.parent / "results").runs:
            read |= {v for k, v in run.arguments.items() if k.endswith("_file") and v}
    assert {str(Path(SHARED_DATA) / n) for n in names} == read
    # the carry's size, with what travels anyway, stays under the device's limit
    assert manifest["carry_bytes"] + manifest["tree_bytes"] <= lease.carry_limit_mib * MIB


def test_a_carry_over_the_limit_is_refused_naming_the_sizes(tmp_path):
    small = Lease(**{**json.loads((ROOT / "configuration" / "gpu_lease.json").read_text()), "carry_limit_mib": 10})
    with pytest.raises(ValueError, match=r"over the device's 10 MiB \(wheels .* encoder 4\d\.\d MiB"):
        build_carry(tmp_path / "carry", small, download_wheels=False)


def test_the_carried_wheels_meet_the_project_requirements():
    """The pinned wheels are exact versions that pyproject's ranges admit (the device's own packages are older)."""
    import tomllib

    pins = dict(spec.split("==") for spec in load_lease().wheels)
    requirements = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in requirements:
        name = requirement.split(">")[0].split("<")[0].split("=")[0]
        if name in pins:
            # require_version checks an installed version; check the pin against the same range by hand
            from packaging.specifiers import SpecifierSet

            assert pins[name] in SpecifierSet(requirement[len(name):]), requirement
    assert {"transformers", "datasets", "evaluate"} <= set(pins)
    require_version("packaging")


def test_data_paths_are_read_from_another_folder(tmp_path):
    config = {"train_file": f"{SHARED_DATA}/wikipedia/train.txt", "files": [{"file": f"{SHARED_DATA}/ptb/test.txt"}],
              "other": "../shared/database/x", "n": 3}
    moved = relocated(config, tmp_path)
    assert moved == {"train_file": str(tmp_path / "wikipedia" / "train.txt"),
                     "files": [{"file": str(tmp_path / "ptb" / "test.txt")}], "other": "../shared/database/x", "n": 3}
    assert relocated(config, None) is config


def test_runs_that_read_the_same_vectors_share_one_cache(tmp_path):
    experiment = load_experiment("fusion_table", "gpu", tmp_path)
    groups = {run.id: embedding_group(run.arguments) for run in experiment.runs}
    assert groups["none_seed0"] is None and groups["none_seed1"] is None
    assert len({groups[r] for r in groups if not r.startswith("none")}) == 1  # every fusion: the prefix's e_j
    context = load_experiment("document_context", "gpu", tmp_path)
    keys = {run.id: embedding_group(run.arguments) for run in context.runs}
    assert keys["concat_previous_ctx3_seed0"] == keys["concat_previous_ctx3_seed1"] != keys["concat_seed0"]
    assert len({k for k in keys.values() if k}) == 5  # prefix, previous 1 and 3, document 2, prefix+previous 3
    # a cache joined from two windows is embedded after the caches of its parts, which it reads
    tasks = lease_tasks([(e, r) for e in (experiment, context) for r in e.runs], tmp_path, None, Clock(60),
                        {"embed": {}, "runs": {}})
    names = {task.key: task.name for task in tasks}
    joined = next(t for t in tasks if t.key.startswith("embed") and "prefix+previous" in t.name)
    assert sorted(names[n] for n in joined.needs) == ["document_context/concat_previous_ctx3_seed0",
                                                      "document_context/concat_seed0"]
    # the runs the lease starts first are runs of the lease, the learning curve's largest size among them
    lease = load_lease()
    runs = {f"{name}/{r.id}" for name in lease.experiments for r in load_experiment(name, lease.scale, tmp_path).runs}
    assert set(lease.first) <= runs and "learning_curve/concat_n28244_seed0" in lease.first


def test_the_lease_runs_on_cpu_as_a_smoke_test_and_packs_what_report_reads(carry, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))  # a cache of its own: embeds here
    runs = ["fusion_table/none_seed0", "document_context/concat_previous_ctx1_seed0"]
    out = tmp_path / "out"
    summary = run_lease(carry=carry, out=out, smoke_test=True, only=runs, workers=2, results_dir=tmp_path / "results")
    assert {k: v["status"] for k, v in summary["runs"].items()} == {run: "done" for run in runs}
    # the one fusing run's e_j were embedded once, before it trained
    assert list(summary["embed"]) == ["document_context/concat_previous_ctx1_seed0"]
    assert summary["embed"]["document_context/concat_previous_ctx1_seed0"]["status"] == "done"
    assert json.loads((out / "lease.json").read_text())["runs"] == summary["runs"]
    smoke = tmp_path / "results" / "smoke"
    result = json.loads((smoke / "gpu" / "document_context" / "concat_previous_ctx1_seed0.json").read_text())
    assert result["arguments"]["encoder_name_or_path"] == str(carry / "encoder")
    assert result["arguments"]["train_file"] == str(smoke / "gpu" / "lease-data" / "documents" / "train.txt")
    assert not (carry / "data").exists()  # the carry stays as built: it travels again
    # the archive unpacks into a results folder that report turns into the gpu scale's sections
    unpacked = tmp_path / "unpacked"
    # (a smoke test's archive into results/smoke only: it is refused as results)
    with pytest.raises(ValueError, match="a smoke test's .* unpack it with --smoke_test"):
        unpack(out / "lease.tar.gz", unpacked)
    assert not unpacked.exists()
    assert sorted(unpack(out / "lease.tar.gz", unpacked, smoke_test=True)) == [
        "gpu/document_context/concat_previous_ctx1_seed0.json", "gpu/fusion_table/none_seed0.json"]
    assert (unpacked / "smoke" / "gpu" / "fusion_table" / "runs" / "none_seed0" / "log.txt").is_file()
    doc = tmp_path / "reproducing.md"
    doc.write_text("# R\n\n<!-- results:start -->\n<!-- results:end -->\n")
    write_reports(unpacked / "smoke", doc, None, tmp_path / "figures")
    assert "### Fusion variants (gpu scale)" in doc.read_text()


# ------------------------------------------------------------------------------- unpack: the committed results are safe

COMMITTED = "gpu/fusion_table/none_seed0.json"
SUMMARY = {"scale": "gpu", "smoke_test": False, "runs": {}}


def archive_of(path: Path, members: list[tuple[str, bytes | str]]) -> Path:
    """A .tar.gz holding `members` (name, content) in this order, as written, names unchecked."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members:
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def committed(tmp_path) -> Path:
    """A results folder holding one committed gpu result (a real one, copied)."""
    results = tmp_path / "results"
    (results / COMMITTED).parent.mkdir(parents=True)
    (results / COMMITTED).write_bytes((ROOT / "results" / COMMITTED).read_bytes())
    return results


def unchanged(results: Path) -> bool:
    return sorted(str(p.relative_to(results)) for p in results.rglob("*")) == ["gpu", "gpu/fusion_table", COMMITTED] \
        and (results / COMMITTED).read_bytes() == (ROOT / "results" / COMMITTED).read_bytes()


def test_a_good_archive_unpacks_and_replaces_a_committed_result_only_when_asked(committed, tmp_path):
    record = json.loads((ROOT / "results" / COMMITTED).read_text())
    other = json.dumps({**record, "best_eval_perplexity": 1.5})
    seed2 = json.dumps({**record, "run": "none_seed2", "values": {**record["values"], "seed": 2}})
    members = [("gpu/lease.json", json.dumps(SUMMARY)), ("gpu/fusion_table/none_seed2.json", seed2),
               ("gpu/fusion_table/runs/none_seed2/log.txt", "trained\n"), (COMMITTED, other)]
    archive = archive_of(tmp_path / "new.tar.gz", members)
    with pytest.raises(FileExistsError, match=f"would replace 1 committed file.*{COMMITTED}.*--replace"):
        unpack(archive, committed)
    assert unchanged(committed)
    assert unpack(archive, committed, replace=True) == ["gpu/fusion_table/none_seed2.json", COMMITTED]
    assert json.loads((committed / COMMITTED).read_text())["best_eval_perplexity"] == 1.5
    assert (committed / "gpu/fusion_table/runs/none_seed2/log.txt").read_text() == "trained\n"
    assert not list(committed.rglob(".*.unpacking"))
    # the same content again changes nothing and needs no --replace
    assert unpack(archive, committed) == ["gpu/fusion_table/none_seed2.json", COMMITTED]


def bad_archives(record: dict) -> dict[str, tuple[list, str]]:
    """name → (members, what the error says); each written after a good lease.json and a good result."""
    good = json.dumps(record)
    nan = json.dumps({**record, "best_eval_perplexity": float("nan")})
    return {
        "half-written result": ([(COMMITTED, good[: len(good) // 2])], "not valid JSON"),
        "a list": ([(COMMITTED, "[1, 2]")], "must be a JSON object"),
        "empty": ([(COMMITTED, "")], "not valid JSON"),
        "{}": ([(COMMITTED, "{}")], "lacks experiment"),
        "not finite": ([(COMMITTED, nan)], "not a finite number"),
        "no best_eval_perplexity": ([(COMMITTED, json.dumps({k: v for k, v in record.items()
                                                             if k != "best_eval_perplexity"}))],
                                    "without best_eval_perplexity"),
        "misfiled scale": ([("gpu/fusion_table/none_seed7.json", json.dumps({**record, "run": "none_seed7",
                                                                              "scale": "cpu"}))], "its path says"),
        "a figure": ([("figures/fusion_table_gpu.png", b"\x89PNG")], "writes only under gpu/"),
        "a figure of the scale": ([("gpu/fusion_table.png", b"\x89PNG")], "not a file a lease writes"),
        "another scale": ([("cpu/fusion_table/none_seed0.json", good)], "writes only under gpu/"),
        "unknown experiment": ([("gpu/nosuch/none_seed0.json", good)], "unknown experiment 'nosuch'"),
        "garbage arguments": ([("gpu/fusion_table/runs/none_seed0/arguments.json", "garbage")], "not valid JSON"),
        "a second summary": ([("gpu/lease.json", "garbage")], "twice"),
        "a long name": ([("gpu/fusion_table/runs/" + "x" * 240 + "/log.txt", "")], "name part over 200 bytes"),
        "a folder's name": ([("gpu/fusion_table", "x")], "would replace the folder"),
        "a newline in a name": ([("gpu/fusion_table/runs/a\nb/log.txt", "")], "control character"),
        "outside": ([("../x.json", "{}")], "not a file inside the results folder"),
        "too big": ([("gpu/fusion_table/runs/none_seed0/log.txt", bytes(17 * MIB))], "more than a lease writes"),
    }


@pytest.mark.parametrize("case", list(bad_archives({})))
def test_a_bad_archive_is_refused_before_anything_is_written(committed, tmp_path, case):
    record = json.loads((ROOT / "results" / COMMITTED).read_text())
    members, message = bad_archives(record)[case]
    good = [("gpu/lease.json", json.dumps(SUMMARY)),
            ("gpu/fusion_table/none_seed2.json", json.dumps({**record, "run": "none_seed2",
                                                             "values": {**record["values"], "seed": 2}}))]
    archive = archive_of(tmp_path / "bad.tar.gz", good + members)
    with pytest.raises(ValueError, match=message):
        unpack(archive, committed, replace=True)
    assert unchanged(committed), case


@pytest.mark.parametrize("summary, message", [
    (None, "holds 0 lease summaries"), ("garbage", "not valid JSON"), ({"scale": "gpu", "runs": {}}, "lacks smoke_test"),
    ({**SUMMARY, "scale": "tpu"}, "scale 'tpu'"), ({**SUMMARY, "smoke_test": "no"}, "not true or false"),
])
def test_an_archive_without_a_lease_summary_of_its_own_is_refused(committed, tmp_path, summary, message):
    members = [] if summary is None else [("gpu/lease.json", summary if isinstance(summary, str)
                                           else json.dumps(summary))]
    archive = archive_of(tmp_path / "bad.tar.gz", members + [("gpu/fusion_table/runs/x/log.txt", "")])
    with pytest.raises(ValueError, match=message):
        unpack(archive, committed, replace=True)
    assert unchanged(committed)


def test_a_truncated_or_foreign_archive_is_refused_by_name(committed, tmp_path):
    archive = archive_of(tmp_path / "good.tar.gz", [("gpu/lease.json", json.dumps(SUMMARY)),
                                                    ("gpu/fusion_table/runs/x/log.txt", os.urandom(200_000))])
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[:-5000])
    with pytest.raises(ValueError, match="cut.tar.gz is not a complete lease archive"):
        unpack(cut, committed)
    (tmp_path / "plain.txt").write_text("hello")
    with pytest.raises(ValueError, match="plain.txt is not a complete lease archive"):
        unpack(tmp_path / "plain.txt", committed)
    assert unchanged(committed)


@pytest.mark.parametrize("arguments, error, message", [
    ({"workers": 0}, ValueError, "--workers 0: at least 1"), ({"workers": -1}, ValueError, "--workers -1"),
    ({"deadline": 0}, ValueError, "--deadline 0: at least 60 s"), ({"deadline": -5}, ValueError, "--deadline -5"),
    ({"deadline": float("nan")}, ValueError, "--deadline nan"),
    ({"out": "a-file"}, FileExistsError, "--out .*a-file is a file"),
])
def test_lease_arguments_that_cannot_work_are_refused_before_anything_runs(carry, tmp_path, arguments, error, message):
    (tmp_path / "a-file").write_text("")
    if "out" in arguments:
        arguments = {"out": tmp_path / "a-file"}
    with pytest.raises(error, match=message):
        run_lease(carry=carry, smoke_test=True, results_dir=tmp_path / "results", **arguments)
    assert not (tmp_path / "results").exists()


def test_a_carry_without_its_encoder_is_refused_and_a_lease_with_failed_runs_exits_non_zero(carry, tmp_path):
    broken = tmp_path / "carry"
    shutil.copytree(carry, broken)
    shutil.rmtree(broken / "encoder")
    with pytest.raises(FileNotFoundError, match="lacks encoder/config.json.*python gpu_lease.py carry"):
        run_lease(carry=broken, smoke_test=True, results_dir=tmp_path / "results")
    # an encoder whose weights cannot be read: the fusing run fails, and so does the command
    shutil.copytree(carry / "encoder", broken / "encoder")
    (broken / "encoder" / "model.safetensors").write_bytes(b"not weights")
    command = [sys.executable, str(ROOT / "gpu_lease.py"), "run", "--smoke_test", "--carry", str(broken),
               "--results_dir", str(tmp_path / "results"), "--out", str(tmp_path / "out"), "--only",
               "fusion_table/concat_seed0"]
    finished = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert finished.returncode == 1, finished.stderr[-2000:]
    assert "1 runs did not finish: fusion_table/concat_seed0" in finished.stdout


def test_a_lease_without_its_carry_says_how_to_build_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="python gpu_lease.py carry"):
        run_lease(carry=tmp_path / "none", smoke_test=True, results_dir=tmp_path)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_a_lease_stopped_by_sigterm_packs_what_finished(carry, tmp_path, stop):
    """`timeout` and a machine going back send SIGTERM, a person Ctrl-C (SIGINT): the running runs end (their
    processes in sessions of their own, which the terminal's SIGINT does not reach) and the finished ones come back."""
    command = [sys.executable, str(ROOT / "gpu_lease.py"), "run", "--smoke_test", "--carry", str(carry), "--workers",
               "1", "--results_dir", str(tmp_path / "results"), "--out", str(tmp_path / "out"), "--only",
               "fusion_table/none_seed0", "fusion_table/none_seed1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env) as process:
        for line in process.stderr:  # the first run has finished and the second started: then the signal
            if "lease: fusion_table/none_seed1: started" in line:
                process.send_signal(stop)
                break
        process.stderr.read()
    summary = json.loads((tmp_path / "out" / "lease.json").read_text())
    assert summary["runs"]["fusion_table/none_seed0"]["status"] == "done"
    assert summary["runs"]["fusion_table/none_seed1"]["status"] == "stopped: the lease was interrupted"
    with tarfile.open(tmp_path / "out" / "lease.tar.gz") as archive:
        assert "gpu/fusion_table/none_seed0.json" in archive.getnames()
