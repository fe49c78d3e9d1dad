"""reproduce.py: the experiment runner end to end on tiny sizes (real run_clm.py processes), resuming a killed
sweep, the report from results JSONs, and every shipped experiment configuration expanding at both scales."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fusion_lstm_reproduction.experiments import (
    CONFIG_VALUES, EVALUATION_VALUES, EXPERIMENTS_DIR, RUN_KINDS, SCALES, SMOKE_TEST, execute, experiment_names, load_experiment, load_spec,
    with_evaluation_steps,
)
from fusion_lstm_reproduction.report import (
    END, HEADLINE_END, HEADLINE_START, SECTIONS, START, write_reports,
)
from fusion_lstm_reproduction.results import load_results, standard_perplexity
from helpers import DATA, ROOT, TINY_OVERRIDES


def tiny_experiment(tmp_path) -> str:
    """A 2 variants × 2 sizes experiment on the shipped WikiText-2 sample, with its own scales file."""
    scales = {"cpu": {
        "tokenizer": {"train_file": str(DATA / "train.txt"), "vocab_size": 300},
        "run": {"config_overrides": TINY_OVERRIDES, "train_file": str(DATA / "train.txt"),
                "validation_file": str(DATA / "validation.txt"), "test_file": str(DATA / "test.txt"),
                "max_eval_samples": 16, "max_seq_length": 32, "do_train": True, "do_eval": True, "do_predict": True,
                "num_train_epochs": 2, "per_device_train_batch_size": 16, "per_device_eval_batch_size": 16,
                "learning_rate": 0.01, "eval_strategy": "epoch", "save_strategy": "epoch", "save_total_limit": 1,
                "report_to": ["none"], "seed": 0, "disable_tqdm": True,
                "embedding_cache_dir": str(tmp_path / "embedding-cache")}}}
    (tmp_path / "scales.json").write_text(json.dumps(scales))
    experiment = {"description": "tiny", "kind": "train", "scales_file": str(tmp_path / "scales.json"),
                  "scales": {"cpu": {"grid": {"fusion": ["none", "concat"]},
                                     "each": [{"max_train_samples": 24}, {"max_train_samples": 48}]}}}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(experiment))
    return str(path)


def reproduce(*args, background=False):
    command = [sys.executable, str(ROOT / "reproduce.py"), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if background:  # its own process group, so that killing it kills its run_clm.py child too
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The tiny experiment: killed after its first run, then run again to the end."""
    tmp_path = tmp_path_factory.mktemp("tiny-experiment")
    experiment, results = tiny_experiment(tmp_path), tmp_path / "results"
    folder = results / "cpu" / "tiny"
    process = reproduce(experiment, "--results_dir", str(results), background=True)
    deadline = time.monotonic() + 600
    while not list(folder.glob("*.json")):
        assert process.poll() is None and time.monotonic() < deadline, "the first run never finished"
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    first = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")}
    assert len(first) < 4, "the sweep finished before it was killed"
    rerun = reproduce(experiment, "--results_dir", str(results))
    return folder, first, rerun


def test_the_runner_writes_one_results_json_per_run(finished):
    folder, _, _ = finished
    results = {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}
    assert set(results) == {"none_n24", "none_n48", "concat_n24", "concat_n48"}
    for name, result in results.items():
        assert result["values"]["max_train_samples"] == result["metrics"]["train_samples"]
        assert len(result["eval_curve"]) == 2  # one evaluation per epoch
        assert result["best_eval_perplexity"] == min(e["eval_perplexity"] for e in result["eval_curve"])
        assert result["metrics"]["test_perplexity"] > 1 and result["metrics"]["train_tokens_per_second"] > 0
        assert (folder / "runs" / name / "model.safetensors").exists()


def test_a_killed_sweep_resumes_where_it_stopped(finished):
    folder, first, _ = finished
    for name, mtime in first.items():  # what finished before the kill is kept, not rerun
        assert (folder / name).stat().st_mtime_ns == mtime
    assert not list(folder.glob("*.partial"))


def test_results_without_their_models_run_again(finished, tmp_path):
    """A fresh clone has the committed results JSONs but not the models (git ignores them): the demo and the
    experiments that read those models must train them again rather than skip."""
    folder, _, _ = finished
    experiment = load_experiment(str(folder.parent.parent.parent / "tiny.json"), "cpu", folder.parent.parent)
    is_complete = experiment.run_kind.is_complete
    assert all(is_complete(run) for run in experiment.runs)
    run = experiment.runs[0]
    moved = tmp_path / "moved"
    Path(run.arguments["output_dir"]).rename(moved)
    try:
        assert not is_complete(run)
    finally:
        moved.rename(run.arguments["output_dir"])


def test_all_variants_share_one_tokenizer_and_the_embedding_cache(finished, tmp_path):
    folder, _, _ = finished
    runs = [json.loads(p.read_text()) for p in folder.glob("*.json")]
    assert len({r["arguments"]["tokenizer_name"] for r in runs}) == 1
    cache = folder.parent.parent.parent / "embedding-cache"
    records = [json.loads(p.read_text()) for p in cache.glob("*/view-*.json")]
    # the 24-sentence subset and the shared validation and test sets come from the cache, not the encoder
    assert sum(r["embedded"] for r in records) == 48 + 16 + 16


def test_the_summary_prints_each_run_against_none(finished):
    """Each run's line holds its validation perplexity and its change against the none run of the same size."""
    from fusion_lstm_reproduction.tables import change

    folder, _, rerun = finished
    best = {p.stem: json.loads(p.read_text())["best_eval_perplexity"] for p in folder.glob("*.json")}
    for run, none in (("concat_n24", "none_n24"), ("concat_n48", "none_n48")):
        (line,) = [line for line in rerun.stdout.splitlines() if line.startswith(run + " ")]
        assert line.split()[1:4] == [f"{best[run]:.2f}", *change(best[run], best[none]).split()]


# ------------------------------------------------------------------------------------------------- the report


def fixture_result(experiment, fusion, perplexity, **values) -> dict:
    values = {"fusion": fusion, **values}
    return {"experiment": experiment, "scale": "cpu", "run": "_".join(map(str, values.values())), "values": values,
            "metrics": {"eval_perplexity": perplexity, "test_perplexity": perplexity * 1.1, "train_loss": 5.0,
                        "train_tokens_per_second": 1000.0, "train_samples": values.get("max_train_samples", 3000)},
            "eval_curve": [], "best_eval_perplexity": perplexity,
            "arguments": {"num_train_epochs": 3, "validation_file": f"{values.get('domain', 'wiki')}.txt"},
            "machine": {"cpus": 2, "processor": "x86_64", "gpu": None}}


def write_results(results: Path, fixtures: list[dict]):
    for result in fixtures:
        path = results / "cpu" / result["experiment"] / f"{result['run']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result))


def test_report_builds_the_readme_section_and_figures_from_results_jsons(tmp_path):
    results = tmp_path / "results"
    fixtures = [fixture_result("fusion_table", "none", 100.0, seed=0), fixture_result("fusion_table", "none", 102.0,
                seed=1), fixture_result("fusion_table", "concat", 90.0, seed=0),
                fixture_result("fusion_table", "concat", 92.0, seed=1), fixture_result("fusion_table", "init_hc", 95.0)]
    fixtures += [fixture_result("limited_data", f, p, max_train_samples=n)
                 for f, ps in (("none", (200.0, 150.0)), ("concat", (180.0, 120.0))) for n, p in zip((750, 1500), ps)]
    fixtures += [fixture_result("cross_domain", f, p, domain=d)
                 for d, (a, b) in (("books", (300.0, 270.0)), ("news", (400.0, 400.0))) for f, p in (("none", a),
                                                                                                      ("concat", b))]
    write_results(results, fixtures)
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n## Results\n\n{START}\nold\n{END}\n\n## After\n")
    write_reports(results, readme, None, results / "figures")

    text = readme.read_text()
    assert text.startswith("# Title") and text.endswith("## After\n") and "\nold\n" not in text
    section = text.split(START)[1].split(END)[0]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    assert "101.0 ± 1.4 (n=2)" in rows["`none`"] and "91.0 ± 1.4 (n=2)" in rows["`concat`"]
    assert "-9.9 %" in rows["`concat`"] and "-5.9 %" in rows["`init_hc`"]
    # the paper's numbers beside ours, in standard perplexity
    assert f"{standard_perplexity(16.74):.1f}" in rows["`none`"] and f"{standard_perplexity(15.80):.1f}" in rows[
        "`concat`"]
    assert "-10.0 %" in rows["750"] and "-20.0 %" in rows["1,500"]
    assert "-10.0 %" in rows["books"] and "+0.0 %" in rows["news"] and "-9.9 %" in rows["wikipedia (validation)"]
    figures = sorted(p.name for p in (results / "figures").glob("*.png"))
    assert figures == ["cross_domain_cpu.png", "fusion_table_cpu.png", "limited_data_cpu.png"]
    # the front page's short table: each variant against none, beside the paper's change
    front = tmp_path / "FRONT.md"
    front.write_text(f"# Front\n{HEADLINE_START}\n{HEADLINE_END}\n")
    write_reports(results, readme, front, results / "figures")
    headline = {line.split("|")[1].strip(): line for line in front.read_text().splitlines() if line.startswith("| ")}
    assert "91.0 | -9.9 % | -8.0 %" in headline["`concat`"] and "95.0 | -5.9 % | — |" in headline["`init_hc`"]
    assert "](results/figures/fusion_table_cpu.png)" in front.read_text()
    assert all((results / "figures" / f).read_bytes().startswith(b"\x89PNG") for f in figures)


def reading_fixture(fusion: str, seed: int, delta: float, words_per_second: float,
                    story_gains: list[float] | None = None, bits: float = 14.0) -> dict:
    """A reading_times result; with `story_gains`, the summed held-out gain of each of as many 100-word stories."""
    result = fixture_result("reading_times", fusion, 0.0, seed=seed)
    result["metrics"] = {"pearson_r": 0.3, "spearman_rho": 0.4, "delta_log_likelihood": delta + 0.001,
                         "surprisal_coefficient_ms_per_bit": 2.0, "words": 1000, "regression_words": 700,
                         "mean_surprisal_bits": bits,
                         "excluded_from_regression": {"first_words_of_sentence": 200, "with_punctuation": 100},
                         "binned": [{"surprisal": 1.0, "rt": 300.0, "words": 500},
                                    {"surprisal": 9.0, "rt": 340.0, "words": 500}],
                         "linear_fit": {"intercept_ms": 295.0, "ms_per_bit": 5.0}, "spillover": 2,
                         "held_out": {"delta_log_likelihood": delta, "interval_95": [delta - 0.002, delta + 0.002],
                                      "folds": 10, "groups": 10},
                         "words_per_second": words_per_second}
    if story_gains:
        result["metrics"]["held_out"]["by_group"] = {"names": [f"story{i}" for i in range(len(story_gains))],
                                                     "words": [100] * len(story_gains), "sums": story_gains}
    return result


def test_report_of_reading_times_shows_the_held_out_delta_and_the_scoring_speed(tmp_path):
    results = tmp_path / "results"
    write_results(results, [fixture_result("fusion_table", "none", 100.0, seed=0),
                            fixture_result("fusion_table", "concat", 90.0, seed=0),
                            reading_fixture("none", 0, 0.010, 1000.0, [1.0, 0.5, 1.5]),
                            reading_fixture("none", 1, 0.012, 1200.0),
                            reading_fixture("concat", 0, 0.011, 30.0, [2.0, 1.5, 2.5], bits=13.5)])
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n{START}\n{END}\n")
    write_reports(results, readme, None, results / "figures")
    rows = {line.split("|")[1].strip(): line for line in readme.read_text().splitlines() if line.startswith("| `")}
    assert "10.00 [8.00, 12.00] | 11.00 |" in rows["`none_0`"] and "11.00 [9.00, 13.00]" in rows["`concat_0`"]
    assert rows["`none_0`"].startswith("| `none_0` | 14.00 |") and rows["`concat_0`"].startswith("| `concat_0` | 13.50 |")
    # against none of its seed, paired by story: 1 nat more in each of 3 stories of 100 words; p = 1/8 of the flips
    assert rows["`concat_0`"].endswith("| +10.00 [10.00, 10.00], p = 0.125 |")
    assert rows["`none_0`"].endswith("| — |") and rows["`none_1`"].endswith("| — |")
    assert (results / "figures" / "reading_times_cpu.png").read_bytes().startswith(b"\x89PNG")
    # every scored model in one figure of fit against language-model quality
    assert (results / "figures" / "fit_vs_quality.png").read_bytes().startswith(b"\x89PNG")
    # how fast each fusion scored the corpus, beside its table
    assert "`none` 1,100 words/s, `concat` 30 words/s" in readme.read_text()


def test_reading_times_with_the_story_report_what_the_story_and_the_seed_change_in_the_same_model(tmp_path):
    def scored(gains, seed=0, **values):
        result = reading_fixture("concat", seed, 0.01, 50.0, gains)
        result["values"] = {"fusion": "concat", **values, "seed": seed}
        result["run"] = "_".join(map(str, result["values"].values()))
        return {**result, "experiment": "document_reading_times"}

    context = {"fusion_context": "previous", "context_sentences": 3}
    results = tmp_path / "results"
    write_results(results, [scored([1.0, 0.5, 1.5]), scored([0.5, 0.5, 1.0], seed=1),
                            scored([2.0, 1.5, 2.5], **context),
                            scored([1.0, 0.5, 1.5], **context, scored_context_sentences=0)])
    readme = tmp_path / "README.md"
    readme.write_text(f"{START}\n{END}\n")
    write_reports(results, readme, None, results / "figures")
    section = readme.read_text()
    (story,) = [line for line in section.splitlines() if line.startswith("*Reading the story against")]
    # 1 nat more in each of 3 stories of 100 words when the model reads its story; the sentence-level run has no pair
    assert story.endswith("`concat_previous_3_0` +10.00 [10.00, 10.00], p = 0.125.")
    assert "`concat_0`" not in story
    # the second seed gains 0.5 nats less in two of the three stories: -1/300 per word, smaller in none of 8 flips
    (seeds,) = [line for line in section.splitlines() if line.startswith("*Seed to seed*")]
    assert seeds.endswith("`concat_1` minus `concat_0` -3.33 [-5.00, 0.00], p = 1.")


def test_report_of_the_probes(tmp_path):
    results = tmp_path / "results"
    probe = lambda experiment, run, ppl, **values: {**fixture_result(experiment, "concat", ppl, **values),  # noqa
                                                   "run": run}
    fixtures = [probe("fusion_table", "none_seed0", 100.0), probe("fusion_table", "concat_seed0", 90.0)]
    fixtures[0]["values"]["fusion"] = "none"
    dropout = probe("fusion_dropout", "concat_0to1_vector_seed0", 95.0, fusion_dropout_schedule="0to1",
                    fusion_dropout_mode="vector")
    dropout["metrics"]["eval_without_fusion_perplexity"] = 120.0
    dropout["eval_curve"] = [{"epoch": 1.0, "eval_perplexity": 130.0}, {"epoch": 2.0, "eval_perplexity": 95.0}]
    dropout_none = probe("fusion_dropout", "none_seed0", 100.0)
    dropout_none["values"]["fusion"] = "none"
    fixtures += [dropout, dropout_none]
    fixtures += [probe("sub_prefix", f"concat_{c}_k{k}_seed0", p, fusion_context=c, fusion_context_fraction=k)
                 for c, ps in (("subr", (99.0, 96.0)), ("subl", (93.0, 98.0))) for k, p in zip((0.25, 0.75), ps)]
    fixtures += [{**probe("vector_sources", f"{f}_{v}", p), "values": {"fusion": f, "fusion_vectors": v}}
                 for f, v, p in (("embedding_only", "zeros", 900.0), ("concat", "zeros", 101.0),
                                 ("embedding_only", "tfidf", 400.0))]
    curves = {"1": {"last": 0.5, "last_count": 30}, "2": {"previous": 0.9, "previous_count": 30, "last": 0.6,
                                                          "last_count": 30}}
    fixtures.append({**probe("prefix_similarity", "cls", 0.0), "metrics": {"sentences": 30, "encoder_pooling": "cls",
                                                                           "curves": curves}})
    write_results(results, fixtures)
    readme = tmp_path / "README.md"
    readme.write_text(f"{START}\n{END}\n")
    write_reports(results, readme, None, results / "figures")
    section = readme.read_text()
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    # fusion dropout: best dev, final with e_j, final with e_j zeroed and its change against none
    assert "95.0" in rows["`concat_0to1_vector_seed0`"] and "120.0 | +20.0 %" in rows["`concat_0to1_vector_seed0`"]
    # sub-prefix feeders against the fusion_table endpoints
    subr = [line for line in section.splitlines() if line.startswith("| subr | 0.25")][0]
    assert "99.0 | -1.0 % | +10.0 %" in subr
    # vector sources: the MLP and concat side by side, concat against none
    assert "900.0 | 101.0 | +1.0 %" in rows["zeros (control)"] and "400.0 | — |" in rows["tf-idf of the prefix"]
    assert rows["cls"].split("|")[3].strip() == "0.900"
    figures = sorted(p.name for p in (results / "figures").glob("*.png"))
    assert figures == ["fusion_dropout_cpu.png", "fusion_table_cpu.png", "prefix_similarity_cpu.png",
                       "sub_prefix_cpu.png"]


def test_cosine_curves_by_prefix_length():
    from fusion_lstm_reproduction.similarity import cosine_curves

    a = [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]  # 45° steps: previous 0.707 at lengths 2 and 3, last 0 and 0.707
    b = [[1.0, 0.0], [1.0, 0.0]]
    curves = cosine_curves([a, b])
    assert curves[2]["previous_count"] == 2 and abs(curves[2]["previous"] - (0.7071 + 1.0) / 2) < 1e-4
    assert abs(curves[3]["previous"] - 0.7071) < 1e-4 and curves[3]["previous_count"] == 1
    assert abs(curves[1]["last"] - (0.0 + 1.0) / 2) < 1e-4 and abs(curves[2]["last"] - 0.7071) < 1e-4
    assert "last" not in curves[3]  # the last prefix is not compared with itself


def test_prefix_similarity_reads_the_embedding_cache(tmp_path):
    from fusion_lstm_reproduction.similarity import prefix_similarity

    arguments = {"validation_file": str(DATA / "validation.txt"), "max_eval_samples": 12, "max_seq_length": 24,
                 "embedding_cache_dir": str(tmp_path)}
    first = prefix_similarity(**arguments)
    views = list(tmp_path.glob("*/view-*.json"))
    assert first["sentences"] == 12 and len(views) == 1
    assert json.loads(views[0].read_text())["embedded"] == 12
    again = prefix_similarity(**arguments)  # served by the cache: nothing embedded again
    assert again == first and len(list(tmp_path.glob("*/part-*.arrow"))) == 1
    assert 0 < first["curves"]["2"]["previous"] <= 1.0 + 1e-6


def test_the_paper_unit_converts_to_standard_perplexity():
    assert round(standard_perplexity(16.74), 1) == 58.3 and round(standard_perplexity(15.80), 1) == 53.6


# ---------------------------------------------------------------------------------------------- configurations


@pytest.mark.parametrize("name, scale", [
    (name, scale) for name in ("fusion_table", "limited_data", "fusion_dropout", "sub_prefix", "vector_sources",
                               "document_context", "learning_curve") for scale in SCALES if scale in load_spec(name)["scales"]])
def test_shipped_train_experiments_expand_into_runs_that_run_clm_parses(name, scale, tmp_path, monkeypatch):
    import fusion_lstm_training.clm as run_clm

    experiment = load_experiment(name, scale, tmp_path)
    assert experiment.runs and len({run.id for run in experiment.runs}) == len(experiment.runs)
    monkeypatch.chdir(ROOT)
    for run in experiment.runs:
        config = tmp_path / f"{run.id}.json"
        # bf16 on a machine without CUDA needs use_cpu: the gpu scale is parsed here, run on a GPU
        config.write_text(json.dumps({**run.arguments, "use_cpu": True}))
        monkeypatch.setattr("sys.argv", ["run_clm.py", str(config)])
        model_args, data_args, training_args = run_clm.parse_arguments()
        assert model_args.fusion == run.values["fusion"] and training_args.do_train
        for key, value in run.values.items():  # every varying argument lands where run_clm reads it
            if key in CONFIG_VALUES:  # a model config field: through config_overrides
                assert model_args.config_fields()[key] == value, (run.id, key)
                continue
            if key in EVALUATION_VALUES:  # through the Trainer's evaluation steps
                assert training_args.eval_steps <= value, (run.id, key)
                continue
            parsed = [getattr(a, key) for a in (model_args, data_args, training_args) if hasattr(a, key)]
            assert parsed == [value], (run.id, key)
    tied = [run for run in experiment.runs if run.values.get("tie_word_embeddings")]
    assert all(run.id.endswith("_tied_seed0") for run in tied) and (name, scale, len(tied)) in {
        (name, scale, 0), ("document_context", "cpu", 1)}


def test_a_gpu_scale_run_takes_a_few_steps_here(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    experiment = load_experiment("fusion_table", "gpu", tmp_path)
    run = next(r for r in experiment.runs if r.values["fusion"] == "concat")
    run.arguments["embedding_cache_dir"] = str(tmp_path / "embedding-cache")
    # fp32: bf16 is refused on a CPU without native bfloat16, and CI's CPU may be one
    result = execute(experiment, run, tmp_path, overrides={**SMOKE_TEST, "use_cpu": True, "bf16": False})
    assert result["metrics"]["eval_perplexity"] > 1 and result["arguments"]["max_seq_length"] == 64
    assert (tmp_path / "gpu" / "fusion_table" / f"{run.id}.json").exists()


def test_the_paper_experiments_at_cpu_scale(tmp_path):
    fusion_table = load_experiment("fusion_table", "cpu", tmp_path)
    fusions = [run.values["fusion"] for run in fusion_table.runs]
    assert set(fusions) == {"none", "concat", "add", "multiply", "init_h", "init_c", "init_hc"}
    assert fusions.count("none") >= 2 and fusions.count("concat") >= 2  # seeds
    limited = load_experiment("limited_data", "cpu", tmp_path)
    assert len({run.values["max_train_samples"] for run in limited.runs}) >= 4
    assert {"none", "concat"} <= {run.values["fusion"] for run in limited.runs}


@pytest.mark.parametrize("scale", [scale for scale in SCALES if scale in load_spec("fusion_table")["scales"]])
def test_evaluation_experiments_use_the_fusion_table_models(scale, tmp_path):
    table = {run.id for run in load_experiment("fusion_table", scale, tmp_path).runs}
    domain = load_experiment("cross_domain", scale, tmp_path)
    surprisal = load_experiment("reading_times", scale, tmp_path)
    for experiment in (domain, surprisal):
        models = {Path(run.arguments["model_name_or_path"]) for run in experiment.runs}
        assert {m.name for m in models} <= table and all(m.parent.parent.name == "fusion_table" for m in models)
        assert {"none", "concat"} <= {run.values["fusion"] for run in experiment.runs}
    assert {run.values["domain"] for run in domain.runs} == {"books", "news"}
    assert all(Path(run.arguments["validation_file"]).exists() for run in domain.runs)  # the fixed samples


def test_every_shipped_experiment_has_a_known_kind_a_report_section_and_a_help_entry():
    names = experiment_names()
    assert {"demo", "fusion_table", "fusion_dropout", "sub_prefix", "vector_sources", "prefix_similarity"} <= set(names)
    for name in names:
        spec = load_spec(name)
        assert spec["kind"] in RUN_KINDS and name in SECTIONS, name
        assert spec["report"]["title"] and spec["report"]["text"], name
    help_text = subprocess.run([sys.executable, str(ROOT / "reproduce.py"), "--help"], capture_output=True, text=True,
                               timeout=120).stdout
    for name in names:  # each on its line, with its one-line summary
        summary = load_spec(name)["summary"]
        assert summary and "\n" not in summary and len(summary) <= 110, name
        # followed by the time of the repository's runs, where it holds some
        assert any(line.split()[: len(summary.split()) + 1] == [name, *summary.split()]
                   for line in help_text.splitlines()), name
    assert "(measured: cpu " in help_text


def test_report_refuses_to_replace_the_section_without_results(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"{START}\nkept\n{END}\n")
    with pytest.raises(ValueError, match="no results"):
        write_reports(tmp_path / "misspelled", readme, None, tmp_path / "figures")
    assert readme.read_text() == f"{START}\nkept\n{END}\n"


def test_a_report_of_another_results_folder_goes_beside_it_and_never_rewrites_the_repository_pages(tmp_path):
    import reproduce

    pages = {path: path.read_bytes() for path in (ROOT / "README.md", ROOT / "docs" / "reproducing.md")}
    mine = tmp_path / "mine"
    demo = [{**fixture_result("demo", f, p, seed=0), "wall_seconds": 60.0} for f, p in (("none", 100.0), ("concat", 90.0))]
    write_results(mine, demo)
    reproduce.main(["report", "--results_dir", str(mine)])
    assert "(cpu scale)" in (mine / "report.md").read_text()  # what the folder holds, beside it
    assert all(path.read_bytes() == content for path, content in pages.items())
    # pages named explicitly: without a fusion_table there is no headline, and the README stays as it was
    doc, readme = tmp_path / "doc.md", tmp_path / "README.md"
    doc.write_text(f"# Doc\n{START}\nold\n{END}\n")
    readme.write_text(f"# Readme\n{HEADLINE_START}\nkept\n{HEADLINE_END}\n")
    reproduce.main(["report", "--results_dir", str(mine), "--results_doc", str(doc), "--readme", str(readme)])
    assert "\nold\n" not in doc.read_text() and readme.read_text().count("kept") == 1
    # a README without its markers is refused before the document is written
    doc.write_text(f"# Doc\n{START}\nold\n{END}\n")
    readme.write_text("# Readme without markers\n")
    with pytest.raises(ValueError, match="README.md has no generated section"):
        reproduce.main(["report", "--results_dir", str(mine), "--results_doc", str(doc), "--readme", str(readme)])
    assert "\nold\n" in doc.read_text()


def test_unknown_experiment_and_scale_are_refused(tmp_path):
    with pytest.raises(ValueError, match="fusion_table"):
        load_experiment("fusion_tabel", "cpu", tmp_path)
    with pytest.raises(ValueError, match="cpu"):
        load_experiment("demo", "gpu", tmp_path)
    assert (EXPERIMENTS_DIR / "scales.json").exists()


def test_the_probe_experiments(tmp_path):
    dropout = {run.id: run for run in load_experiment("fusion_dropout", "cpu", tmp_path).runs}
    assert {"none_seed0", "concat_seed0", "concat_0to1_vector_seed0", "concat_1to0_element_seed0"} <= set(dropout)
    assert dropout["concat_0to1_vector_seed0"].arguments["eval_without_fusion"] is True
    feeders = load_experiment("sub_prefix", "cpu", tmp_path).runs
    assert {(r.values["fusion_context"], r.values["fusion_context_fraction"]) for r in feeders} == {
        (c, k) for c in ("subr", "subl") for k in (0.25, 0.5, 0.75)}
    sources = {run.id: run for run in load_experiment("vector_sources", "cpu", tmp_path).runs}
    assert {"embedding_only_zeros", "concat_shuffled", "embedding_only_count", "concat_tfidf", "concat_sentence",
            "embedding_only_encoder_mean"} <= set(sources)
    # the paper's MLP: e_j → 768 → 768 → vocabulary
    assert "hidden_size=768,projection_size=768" in sources["embedding_only_zeros"].arguments["config_overrides"]
    assert "projection_size=512" in sources["concat_zeros"].arguments["config_overrides"]
    similarity = load_experiment("prefix_similarity", "cpu", tmp_path).runs
    assert [r.values["encoder_pooling"] for r in similarity] == ["cls", "mean"]
    assert similarity[0].arguments["tokenizer_name"].endswith("tokenizer-bpe8192")


def test_bf16_on_a_cpu_without_native_bfloat16_is_refused_naming_the_fix(monkeypatch):
    from fusion_lstm_training.precision import check_cpu_bf16, cpu_has_native_bf16

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)  # a cap in the environment would make any CPU not native

    avx2 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
    amx = "flags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n"
    assert cpu_has_native_bf16(avx2) is False and cpu_has_native_bf16(amx) is True
    assert cpu_has_native_bf16("model name: Apple M2\n") is None  # no flags to read: not refused
    with pytest.raises(ValueError, match="no native bfloat16.*--bf16 false"):
        check_cpu_bf16(avx2)
    check_cpu_bf16(amx)


def test_a_measurement_records_the_cpu_its_flags_and_any_cap_on_them(monkeypatch):
    """What a time ran on: the model name, the vector flags, and an instruction-set cap in the environment (an AVX2
    machine emulated on a newer one), which also makes bfloat16 not native."""
    from fusion_lstm_reproduction.results import device_text
    from fusion_lstm_training.precision import cpu_description, cpu_has_native_bf16, cpu_text

    amx = "model name\t: Intel Xeon\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n"
    for name in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY"):
        monkeypatch.delenv(name, raising=False)
    cpu = cpu_description(amx)
    assert cpu["model"] == "Intel Xeon" and cpu["vector_flags"] == ["avx2", "avx512f", "amx_bf16"]
    assert cpu["isa_limits"] == {} and cpu_has_native_bf16(amx) is True
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    capped = cpu_description(amx)
    assert capped["isa_limits"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"} and cpu_has_native_bf16(amx) is False
    assert "capped: ONEDNN_MAX_CPU_ISA=AVX2" in cpu_text(capped)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert cpu_has_native_bf16(amx) is True
    assert device_text({"cpus": 2, "processor": "x86_64", "gpu": None, "cpu": capped}).startswith("Intel Xeon (")
    assert device_text({"cpus": 2, "processor": "x86_64", "gpu": None}) == "2-core CPU (x86_64)"  # older results
    assert device_text({"cpus": 2, "gpu": "NVIDIA H200", "cpu": capped}) == "NVIDIA H200"


def test_auto_precision_on_a_cpu_without_native_bfloat16_is_fp32_without_measuring(monkeypatch, caplog):
    """Emulated bfloat16 is so slow that measuring it took minutes before the first line of a run."""
    import torch

    from fusion_lstm_training import precision

    if torch.cuda.is_available():
        pytest.skip("a GPU chooses bf16 before the CPU's flags are read")
    monkeypatch.setattr(precision, "bf16_time_ratio", lambda: pytest.fail("measured where no native bf16 exists"))
    with caplog.at_level("INFO", logger="fusion_lstm_training.precision"):
        assert precision.choose_precision("auto", "flags\t\t: fpu sse2 avx avx2 fma\n") == "fp32"
    assert "fp32 (this CPU has no native bfloat16" in caplog.text


def test_precision_replaces_the_configs_bf16_and_is_recorded(tmp_path):
    from fusion_lstm_reproduction.experiments import record
    from fusion_lstm_training.precision import choose_precision, precision_arguments

    assert choose_precision("fp32") == "fp32" and choose_precision("auto") in ("fp32", "bf16")
    with pytest.raises(ValueError, match="fp16"):
        choose_precision("fp16")
    assert precision_arguments("bf16") == {"bf16": True, "use_cpu": True}  # no CUDA here: bf16 needs use_cpu
    as_configured = load_experiment("fusion_table", "cpu", tmp_path)
    assert all(run.arguments["bf16"] for run in as_configured.runs)
    fp32 = load_experiment("fusion_table", "cpu", tmp_path, precision="fp32")
    assert not any(run.arguments["bf16"] for run in fp32.runs)
    demo = load_experiment("demo", "cpu", tmp_path, precision="bf16")
    assert all(run.arguments["bf16"] and run.arguments["use_cpu"] for run in demo.runs)
    run = fp32.runs[0]
    assert record(fp32, run, {}, run.arguments, 1.0)["precision"] == "fp32"


def test_reading_times_with_the_story_score_the_document_context_models(tmp_path):
    trained = {run.id for run in load_experiment("document_context", "cpu", tmp_path).runs}
    scored = load_experiment("document_reading_times", "cpu", tmp_path).runs
    as_trained = [run for run in scored if "scored_context_sentences" not in run.values]
    assert {run.id for run in as_trained} <= trained and {"none_seed0", "none_ctx2_seed0"} <= {r.id for r in as_trained}
    assert all(run.arguments["document_column"] == "item" for run in scored)
    assert all(Path(run.arguments["model_name_or_path"]).parent.parent.name == "document_context" for run in scored)
    # each model trained with previous sentences is scored again reading none, and only those
    without = {run.id: run for run in scored if "scored_context_sentences" in run.values}
    assert set(without) == {f"{run.id}_read0" for run in as_trained if run.values.get("context_sentences")}
    assert "concat_previous_ctx3_seed0_read0" in without and "none_seed0_read0" not in without
    read0 = without["concat_previous_ctx3_seed0_read0"]
    assert read0.arguments["context_sentences"] == 0 and read0.arguments["model_name_or_path"].endswith(
        "concat_previous_ctx3_seed0")
    assert all("context_sentences" not in run.arguments for run in as_trained)


def test_broken_json_files_are_named(tmp_path):

    broken = tmp_path / "results" / "cpu" / "demo" / "none.json"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"experiment": "demo", "sca')
    with pytest.raises(ValueError, match=r"none.json: the results file is not valid JSON"):
        load_results(tmp_path / "results")
    broken.write_text('{"experiment": "demo"}')
    with pytest.raises(ValueError, match=r"none.json: the results file lacks scale, run, values, metrics"):
        load_results(tmp_path / "results")
    listed = tmp_path / "mine.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"mine.json: the experiment must be a JSON object"):
        load_experiment(str(listed), "cpu", tmp_path)


def test_a_users_runs_go_to_outputs_and_report_reads_the_record():
    import reproduce

    assert reproduce.default_results_dir("demo") == ROOT / "outputs"
    assert reproduce.default_results_dir("report") == ROOT / "results"
    assert "/outputs/" in (ROOT / ".gitignore").read_text().split()


def test_a_broken_experiment_is_refused_before_the_precision_is_measured(tmp_path, monkeypatch):
    import reproduce

    def measured(precision):
        raise AssertionError("the precision was measured before the experiment was read")

    monkeypatch.setattr(reproduce, "choose_precision", measured)
    cut = tmp_path / "cut.json"
    cut.write_text('{"kind": "train", "scales": {"cpu": ')
    with pytest.raises(ValueError, match="cut.json: the experiment is not valid JSON"):
        reproduce.main([str(cut), "--results_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="Experiment demo has no scale 'gpu'; it has: cpu"):
        reproduce.main(["demo", "--scale", "gpu", "--results_dir", str(tmp_path)])
    with pytest.raises(ValueError, match=r"demo has no runs \['nosuch'\] at cpu scale; its runs are: none_seed0"):
        reproduce.main(["demo", "--runs", "nosuch", "--results_dir", str(tmp_path)])


def test_reproduce_works_from_any_folder_and_a_smoke_test_shrinks_a_probe(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run([sys.executable, str(ROOT / "reproduce.py"), "prefix_similarity", "--scale", "cpu",
                             "--smoke_test", "--results_dir", "results"], cwd=elsewhere, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    saved = json.loads((elsewhere / "results" / "smoke" / "cpu" / "prefix_similarity" / "cls.json").read_text())
    assert saved["arguments"]["max_eval_samples"] == 16 and saved["metrics"]["sentences"] == 16


def test_a_smoke_test_scores_only_the_first_words_of_a_reading_time_corpus(tmp_path, tokenizer):
    from fusion_lstm_reproduction.experiments import RUN_KINDS, SMOKE_TEST, SMOKE_TEST_WORDS, Run
    from helpers import tiny_model

    tiny_model("none").save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    corpus = str(ROOT.parent / "shared" / "data" / "natural_stories" / "word_reading_times.tsv")
    run = Run("none_seed0", {"fusion": "none"}, {"model_name_or_path": str(tmp_path / "model"), "input_file": corpus,
                                                 "reading_times": corpus, "batch_size": 32,
                                                 "output_file": str(tmp_path / "runs" / "none_seed0" / "s.tsv")})
    result = RUN_KINDS["surprisal"].execute(run, SMOKE_TEST)
    assert result["metrics"]["words"] == SMOKE_TEST_WORDS


def test_the_speed_pages_are_generated_from_the_bench_json(tmp_path):
    from fusion_lstm_reproduction.report import write_reports
    from fusion_lstm_reproduction.speed import BENCH_END, BENCH_START, SPEED_END, SPEED_START, SpeedPages

    bench = tmp_path / "bench"
    bench.mkdir()
    train = lambda ours, original: {"tokens_per_s": ours, "bare_tokens_per_s": 2500.0,  # noqa: E731
                                    "original_fp32_tokens_per_s": original, "vs_bare": ours / 2500.0,
                                    "vs_original": ours / original}
    (bench / "full.json").write_text(json.dumps({
        "meta": {"date": "2026-01-02", "machine": "m", "torch": "t"},
        "train": {"concat_fp32": train(2600.0, 83.0), "init_hc_fp32": train(365.0, 111.0)},
        "context": {"scored_tokens_per_s": {"sentence": 3000.0, "previous K=3": 2991.0}, "vs_sentence": 0.997,
                    "context_tokens_per_sentence": 91.3, "meta": {"date": "2026-01-05"}}}))
    results = tmp_path / "results"
    write_results(results, [{**fixture_result("demo", f, p, seed=0), "wall_seconds": 60.0}
                            for f, p in (("none", 100.0), ("concat", 90.0))])
    doc, speed, tables = tmp_path / "doc.md", tmp_path / "speed.md", tmp_path / "BENCH.md"
    doc.write_text(f"{START}\n{END}\n")
    speed.write_text(f"# Speed\n{SPEED_START}\nold 8 minutes\n{SPEED_END}\nkept\n")
    tables.write_text(f"# bench\n{BENCH_START}\n| old | table |\n{BENCH_END}\nwhat limits\n")
    write_reports(results, doc, None, tmp_path / "figures", SpeedPages(bench, speed, tables))
    text = speed.read_text()
    assert "old 8 minutes" not in text and text.endswith("kept\n")
    assert "1.04× a bare" in text and "31× the paper's original" in text and "1.00× the sentence-level" in text
    assert "GFLOP/s" not in text and "generation" not in text  # sections the bench did not run are left out
    # bench/README.md: each section's table with its date, and the targets met or missed, from the same numbers
    text = tables.read_text()
    assert "| old | table |" not in text and text.endswith("what limits\n")
    assert "train (training tokens/s), 2026-01-02:" in text and "context (training with" in text and "2026-01-05" in text
    assert "| concat | fp32 | 2600 | 2500 | 1.04 | 83 | 31.3 |" in text
    assert "| previous K=3 | 2991 | 1.00 |" in text and "generate" not in text
    assert "| late fusion (`concat`) ≥ 0.9× the bare LSTM LM | met: 1.040× (fp32) |" in text
    assert "| early fusion (`init_hc`) ≥ 5× the original | missed: 3.3× (fp32) |" in text
    # a speed page without its markers is refused before anything is written
    speed.write_text("# Speed\n")
    doc.write_text(f"{START}\nkept\n{END}\n")
    with pytest.raises(ValueError):
        write_reports(results, doc, None, tmp_path / "figures", SpeedPages(bench, speed, tables))
    assert doc.read_text() == f"{START}\nkept\n{END}\n"


def test_the_large_scale_trains_the_document_runs_to_early_stopping_with_their_controls(tmp_path):
    experiment = load_experiment("document_context", "large", tmp_path)
    runs = {run.id: run for run in experiment.runs}
    assert all(run.arguments["early_stopping_patience"] == 2 and run.arguments["num_train_epochs"] == 10
               and run.arguments.get("max_train_samples") is None for run in runs.values())
    assert sum(run.values.keys() == {"fusion", "seed"} and run.values["fusion"] == "none" for run in runs.values()) == 2
    # none reading K = 3 as tokens (the best large run) has a second seed
    assert sorted(run.values["seed"] for run in runs.values() if run.values.get("context_as_tokens")) == [0, 1]
    # the config's dropout, on none (two seeds) and on concat, and e_j's own dropout on concat:
    # model config fields, they reach the model through config_overrides
    for field, fusions in (("dropout", ["concat", "none", "none"]), ("fusion_dropout", ["concat"])):
        dropped = [run for run in runs.values() if field in run.values]
        assert sorted(run.values["fusion"] for run in dropped) == fusions
        assert all(run.arguments["config_overrides"].endswith(f",{field}=0.3") and field not in run.arguments
                   for run in dropped)
    assert any(run.values.get("fusion_vectors") == "constant" for run in runs.values())  # the control
    with_context = [run for run in runs.values() if run.values.get("context_sentences")]
    assert with_context and all(run.arguments["eval_context_controls"] for run in with_context)
    readers = load_experiment("document_reading_times", "large", tmp_path).runs
    assert {Path(run.arguments["model_name_or_path"]).parent.parent.parent.name for run in readers} == {"large"}
    # every model with an encoder is scored, each seed of it; the constant control has none to embed a prefix with
    assert {Path(run.arguments["model_name_or_path"]).name for run in readers} == {
        run.id for run in runs.values() if "fusion_vectors" not in run.values}
    assert {"none_seed1", "none_dropout0.3_seed1"} <= {run.id for run in readers}


def test_document_context_gains_are_reported_against_none_the_constant_control_and_the_replaced_context(tmp_path):
    from fusion_lstm_reproduction.report import build_section

    previous = fixture_result("document_context", "concat", 80.0, fusion_context="previous", context_sentences=3, seed=0)
    previous["metrics"].update({"eval_empty_context_perplexity": 96.0, "eval_other_document_perplexity": 88.0})
    write_results(tmp_path / "results", [
        fixture_result("document_context", "none", 100.0, seed=0),
        fixture_result("document_context", "concat", 95.0, fusion_vectors="constant", seed=0),
        fixture_result("document_context", "concat", 90.0, seed=0), previous,
        # a none that changes how it trains is a run of its own, not part of the none it is compared with
        fixture_result("document_context", "none", 70.0, dropout=0.3, seed=0),
        fixture_result("document_context", "none", 72.1, dropout=0.3, seed=1)])
    text = build_section(load_results(tmp_path / "results"), tmp_path / "results", tmp_path / "figures", tmp_path)
    header = next(line for line in text.splitlines() if line.startswith("| run | fusion | context"))
    assert "vs one constant vector (control)" in header and "context emptied" in header
    row = next(line for line in text.splitlines() if line.startswith("| `concat_previous_3_0`"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    # vs none, vs concat (the prefix), vs the constant control; the context emptied and another document's
    assert cells[4:9] == ["-20.0 %", "-11.1 %", "-15.8 %", "96.0 (+20.0 %)", "88.0 (+10.0 %)"]
    constant = next(line for line in text.splitlines() if line.startswith("| `concat_constant_0`"))
    assert "one constant vector" in constant and "-5.0 %" in constant  # the control itself, against none
    dropout = next(line for line in text.splitlines() if line.startswith("| `none_0.3_0`"))
    assert "-30.0 %" in dropout and "dropout 0.3" in dropout
    # a run with two seeds: how far apart they land, the yardstick for the one-seed differences
    spread = next(line for line in text.splitlines() if line.startswith("*Seed to seed*"))
    assert "`none_0.3_0` / `none_0.3_1`: 70.0 / 72.1 (3.0 % apart)" in spread
    assert (tmp_path / "figures" / "document_context_curves_cpu.png").read_bytes().startswith(b"\x89PNG")


def test_the_budget_says_how_far_early_stopping_let_the_runs_train_and_how_batches_were_ordered():
    from fusion_lstm_reproduction.records import Result
    from fusion_lstm_reproduction.results import budget

    runs = [fixture_result("document_context", "none", 100.0, seed=0), fixture_result("document_context", "concat",
                                                                                      90.0, seed=0)]
    assert "3 epochs, batch" in budget(list(map(Result.of, runs))) and "order" not in budget(list(map(Result.of, runs)))
    for result, epochs in zip(runs, (6.0, 9.0)):
        result["arguments"].update(num_train_epochs=10, early_stopping_patience=2, per_device_train_batch_size=32,
                                   train_sampling_strategy="random")
        result["metrics"]["train_epochs"] = epochs
    assert ("at most 10 epochs, stopped once the validation loss had not improved for 2 evaluations, trained 6–9, "
            "batch 32 (batches in random order)") in budget(list(map(Result.of, runs)))


def test_the_learning_curve_evaluates_every_size_near_its_minimum_and_stops_after_two_epochs(tmp_path):
    runs = {run.id: run.arguments for run in load_experiment("learning_curve", "large", tmp_path).runs}
    # at most 221 steps apart and at every epoch's end (1,765 sentences: 56 steps of 32 a epoch; 28,244: 883 in 4)
    expected = {1765: (56, 2), 3531: (111, 2), 7061: (221, 2), 14122: (221, 4), 28244: (221, 8)}
    for size, (steps, patience) in expected.items():
        for fusion in ("none", "concat"):
            arguments = runs[f"{fusion}_n{size}_seed0"]
            assert (arguments["eval_steps"], arguments["save_steps"], arguments["early_stopping_patience"]) == (
                steps, steps, patience)
            assert arguments["train_sampling_strategy"] == "random" and arguments["load_best_model_at_end"]
            assert arguments["lr_scheduler_type"] == "constant_with_warmup"
    # both seeds of none and concat at every size, and the constant-vector control
    assert all(f"{f}_n{n}_seed{s}" in runs for f in ("none", "concat") for n in expected for s in (0, 1))
    assert all(f"concat_constant_n{n}_seed0" in runs for n in expected)
    with pytest.raises(ValueError, match="early_stopping_epochs"):
        with_evaluation_steps({"early_stopping_epochs": 2, "train_file": str(DATA / "wikipedia" / "train.txt")})


def curve_fixture(fusion: str, size: int, seed: int, per_epoch: list[float], **values) -> dict:
    """A learning-curve result whose dev perplexity is per_epoch[e - 1] at epoch e; the best one is kept."""
    result = fixture_result("learning_curve", fusion, min(per_epoch), max_train_samples=size, seed=seed, **values)
    result["run"] = "_".join(map(str, result["values"].values()))
    result["eval_curve"] = [{"epoch": float(e), "eval_loss": math.log(p), "eval_perplexity": p}
                            for e, p in enumerate(per_epoch, 1)]
    result["metrics"]["train_epochs"] = float(len(per_epoch))
    result["arguments"]["num_train_epochs"] = 30
    return result


def test_the_learning_curve_reports_the_gain_at_convergence_and_at_a_fixed_budget(tmp_path):
    from fusion_lstm_reproduction.report import build_section

    write_results(tmp_path / "results", [
        curve_fixture("none", 1000, 0, [400.0, 300.0, 200.0, 210.0]),
        curve_fixture("none", 1000, 1, [400.0, 300.0, 204.0, 220.0]),
        curve_fixture("concat", 1000, 0, [300.0, 220.0, 190.0, 200.0]),
        curve_fixture("concat", 1000, 1, [300.0, 220.0, 194.0, 200.0]),
        curve_fixture("concat", 1000, 0, [380.0, 290.0, 198.0, 230.0], fusion_vectors="constant"),
        curve_fixture("none", 8000, 0, [200.0, 120.0, 100.0, 105.0]),
        curve_fixture("concat", 8000, 0, [150.0, 110.0, 102.0, 110.0]),
        # the paper's optimizer regime: each fusion against the none trained the same way
        curve_fixture("none", 1000, 0, [900.0, 700.0, 600.0], per_device_train_batch_size=1, learning_rate=1e-05),
        curve_fixture("concat", 1000, 0, [800.0, 630.0, 540.0], per_device_train_batch_size=1, learning_rate=1e-05)])
    text = build_section(load_results(tmp_path / "results"), tmp_path / "results", tmp_path / "figures", tmp_path)
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]
    converged = {(row[0], row[1]): row[2:] for row in rows}
    # none 202 ± 2.8, concat 192, the control 198; concat -5.0 % vs none and -3.0 % vs the control; test = 1.1 × dev
    assert converged[("`none`", "1,000")][:2] == ["202.0 ± 2.8 (n=2)", "2.0 %"]
    assert converged[("`concat`", "1,000")] == ["192.0 ± 2.8 (n=2)", "2.1 %", "-5.0 %", "-3.0 %", "211.2 ± 3.1 (n=2)",
                                                "-5.0 %"]
    assert converged[("`concat_constant`", "1,000")][:4] == ["198.0", "—", "-2.0 %", "—"]
    assert converged[("`concat_batch1_lr1e-05` (vs `none_batch1_lr1e-05`)", "1,000")][2] == "-10.0 %"
    # after 1 epoch concat leads by 25 %, at convergence by 5 %; at 8,000 it ends behind
    budget = next(row for row in rows if row[:3] == ["`concat`", "`none`", "1,000"])
    assert budget[3:7] == ["-25.0 %", "-26.7 %", "-5.0 %", "-5.0 %"]
    assert next(row for row in rows if row[:3] == ["`concat`", "`none`", "8,000"])[3:7] == [
        "-25.0 %", "-8.3 %", "+2.0 %", "+2.0 %"]
    regime = next(row for row in rows if row[0] == "`concat_batch1_lr1e-05`")
    assert regime[1:3] == ["`none_batch1_lr1e-05`", "1,000"] and regime[3:7] == ["-11.1 %", "-10.0 %", "-10.0 %", "-10.0 %"]
    finding = next(line for line in text.splitlines() if line.startswith("In short:"))
    assert "1,000 training sentences: `concat` -5.0 % against `none`" in finding and "8,000" in finding
    assert "-3.0 % against the constant-vector control" in finding
    assert (tmp_path / "figures" / "learning_curve_cpu.png").read_bytes().startswith(b"\x89PNG")
    # the README's headline leads with the curve's finding and labels the fusion table as the short-budget regime
    write_results(tmp_path / "results", [fixture_result("fusion_table", "none", 100.0, seed=0),
                                         fixture_result("fusion_table", "concat", 90.0, seed=0)])
    front = tmp_path / "FRONT.md"
    front.write_text(f"# Front\n{HEADLINE_START}\n{HEADLINE_END}\n")
    write_reports(tmp_path / "results", tmp_path / "doc.md", front, tmp_path / "figures")
    headline = front.read_text()
    assert headline.index("When does the sentence embedding help?") < headline.index("The short-budget regime")
    assert "8,000 training sentences: `concat` +2.0 % against `none`" in headline
    row = next(line for line in headline.splitlines() if line.startswith("| 1,000 |"))
    assert [c.strip() for c in row.strip("|").split("|")][3:] == ["-5.0 %", "-3.0 %", "-25.0 %"]


def test_the_report_reads_each_results_file_once_checked_and_names_the_file_it_refuses(tmp_path):

    good = [fixture_result("fusion_table", "none", 100.0, seed=0), fixture_result("fusion_table", "concat", 90.0, seed=0)]
    folder = tmp_path / "results" / "cpu" / "fusion_table"

    def refused(name: str, record: dict, match: str):
        write_results(tmp_path / "results", good)
        (folder / name).write_text(json.dumps(record).replace('"NAN"', "NaN"))
        with pytest.raises(ValueError, match=match) as error:
            load_results(tmp_path / "results")
        assert str(folder / name) in str(error.value)
        (folder / name).unlink()

    write_results(tmp_path / "results", good)
    found = load_results(tmp_path / "results")
    assert [r.run for r in found[("cpu", "fusion_table")]] == ["concat_0", "none_0"]
    assert found[("cpu", "fusion_table")][1].best_eval_perplexity == 100.0
    # a copy beside the original would make none n = 2
    refused("none_0 (copy).json", good[0], "does not belong where it lies")
    # a cpu result filed under another scale would join that scale's table
    refused("concat_0.json", {**good[1], "scale": "gpu"}, "scale 'gpu'")
    refused("none_0.json", {**good[0], "experiment": "nosuch"}, "experiment 'nosuch'")
    # a number that is not one
    refused("none_0.json", {**good[0], "best_eval_perplexity": "NAN"}, "not a finite number: best_eval_perplexity")
    # a training run without its best evaluation
    refused("none_0.json", {k: v for k, v in good[0].items() if k != "best_eval_perplexity"},
            "training run's results without best_eval_perplexity")
    # one run under two names
    refused("other.json", {**good[0], "run": "other"}, "hold the same run")


def test_a_run_held_by_another_process_is_skipped_naming_it_and_its_lock_ends_with_its_process(tmp_path):
    """Two reproduce.py processes on one results folder never run (resume, clean up) one run at once."""
    import subprocess
    import sys

    from fusion_lstm_reproduction.experiments import RunLocked, execute, load_experiment, lock_path, run_experiment

    experiment = load_experiment("demo", "cpu", tmp_path)
    run = next(r for r in experiment.runs if r.id == "none_seed0")
    lock = lock_path(tmp_path, experiment, run)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from fusion_lstm_reproduction.experiments import run_lock\n"
        f"with run_lock(Path({str(lock)!r})):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        said = []
        assert run_experiment("demo", "cpu", tmp_path, only=["none_seed0"], progress=said.append) == []
        assert f"being run by process {holder.pid} on " in said[-1] and said[-1].endswith("skipped here")
        with pytest.raises(RunLocked, match=f"process {holder.pid}"):
            execute(experiment, run, tmp_path)
    finally:
        holder.kill()
        holder.wait()
    # killed, its lock is gone with it: the run may be taken again
    from fusion_lstm_reproduction.experiments import run_lock

    with run_lock(lock):
        pass


def test_the_terminal_summary_shows_no_empty_column_and_says_whether_seeds_separate_the_variants():
    from fusion_lstm_reproduction.experiments import RUN_KINDS
    from fusion_lstm_reproduction.records import Result

    def run(fusion, perplexity, seed):
        result = fixture_result("demo", fusion, perplexity, seed=seed)
        result["metrics"].pop("test_perplexity")
        return Result.of(result)

    apart = RUN_KINDS["train"].summary([run("none", 100.0, 0), run("none", 101.0, 1), run("concat", 90.0, 0),
                                        run("concat", 90.5, 1)])
    assert apart[0].split() == ["run", "validation", "perplexity", "vs", "none"]  # no empty test or e_j column
    assert apart[-1] == ("concat vs none over 2 and 2 seeds: 90.2 against 100.5 (-10.2 %), a gap of 10.2, 10.2× the "
                         "largest gap between two seeds of one variant (1.0): larger than seed-to-seed variation.")
    close = RUN_KINDS["train"].summary([run("none", 100.0, 0), run("none", 104.0, 1), run("concat", 99.0, 0),
                                        run("concat", 98.0, 1)])
    assert close[-1].endswith("not twice the largest gap between two seeds of one variant (4.0): these seeds show no "
                              "clear difference.")
