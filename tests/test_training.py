"""run_clm.py end to end: the real script, the real Trainer, real accelerate processes, tiny sizes."""

import json
import math
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from modeling_fusion_lstm import FusionLSTMForCausalLM
from helpers import DATA, ROOT, TINY, run_training, tiny_run_config

@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("embedding-cache")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    """One tiny concat training run, shared by the tests that only read its output."""
    tmp_path = tmp_path_factory.mktemp("trained")
    result = run_training(tiny_run_config(tmp_path / "out", cache_dir), tmp_path)
    return tmp_path / "out", result


def test_training_writes_a_loadable_model_with_metrics(trained):
    output_dir, result = trained
    files = {p.name for p in output_dir.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "modeling_fusion_lstm.py",
            "configuration_fusion_lstm.py", "all_results.json", "train_results.json", "eval_results.json"} <= files
    results = json.loads((output_dir / "all_results.json").read_text())
    assert results["eval_perplexity"] > 1 and 0 <= results["eval_accuracy"] <= 1
    assert math.isfinite(results["eval_loss"]) and results["train_samples"] == 64
    assert list((output_dir / "runs").rglob("events.out.tfevents.*")), "TensorBoard logs"
    model = AutoModelForCausalLM.from_pretrained(output_dir, trust_remote_code=True)
    assert model.config.fusion == "concat" and model.config.hidden_size == TINY["hidden_size"]


def test_eval_perplexity_is_exp_of_the_mean_token_nll(trained):
    output_dir, _ = trained
    results = json.loads((output_dir / "all_results.json").read_text())
    model = FusionLSTMForCausalLM.from_pretrained(output_dir).eval()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    sentences = [s for s in (DATA / "validation.txt").read_text().splitlines() if s.strip()][:24]
    nll, count = 0.0, 0
    with torch.no_grad():
        for sentence in sentences:
            ids = tokenizer(sentence + tokenizer.eos_token, return_tensors="pt")["input_ids"][:, :32]
            loss = model(input_ids=ids, labels=ids).loss
            nll += loss.item() * (ids.shape[1] - 1)
            count += ids.shape[1] - 1
    # the run fed float16 cached embeddings, this recomputes them in float32
    assert math.isclose(math.exp(nll / count), results["eval_perplexity"], rel_tol=2e-3)


def cache_files(cache_dir) -> dict[str, int]:
    """The embedding cache's files and their modification times."""
    return {str(p.relative_to(cache_dir)): p.stat().st_mtime_ns for p in cache_dir.rglob("*") if p.is_file()}


def cache_records(cache_dir) -> list[dict]:
    return [json.loads(p.read_text()) for p in cache_dir.glob("*/view-*.json")]


def test_second_run_reuses_the_cached_embeddings(trained, cache_dir, tmp_path):
    before = cache_files(cache_dir)
    records = cache_records(cache_dir)
    assert sorted(r["split"] for r in records) == ["train", "validation"]
    assert sorted((r["sentences"], r["embedded"]) for r in records) == [(24, 24), (64, 64)]
    run_training(tiny_run_config(tmp_path / "again", cache_dir), tmp_path)
    assert cache_files(cache_dir) == before  # nothing embedded or rewritten


def test_cache_built_with_another_encoder_is_not_reused(trained, cache_dir, tmp_path, encoder_path):
    from transformers import AutoModel, AutoTokenizer

    other = tmp_path / "other-encoder"
    encoder = AutoModel.from_pretrained(encoder_path)
    with torch.no_grad():
        encoder.encoder.layer[0].output.dense.weight.mul_(1.01)
    encoder.save_pretrained(other)
    AutoTokenizer.from_pretrained(encoder_path).save_pretrained(other)
    before = cache_files(cache_dir)
    run_training(tiny_run_config(tmp_path / "out", cache_dir, encoder_name_or_path=str(other)), tmp_path)
    added = set(cache_files(cache_dir)) - set(before)
    assert len([name for name in added if "/view-" in name and name.endswith(".arrow")]) == 2  # embedded anew


def test_without_precompute_the_model_embeds_inside(trained, tmp_path):
    """No cache is written, and the model's own encoder gives the run the e_j the precompute gave the same run: the
    same perplexity up to the cache's float16 rounding (measured 3e-5 relative)."""
    cache = tmp_path / "cache"
    run_training(tiny_run_config(tmp_path / "out", cache, precompute_fusion_embeddings=False), tmp_path)
    assert not cache.exists()
    inside = json.loads((tmp_path / "out" / "all_results.json").read_text())["eval_perplexity"]
    precomputed = json.loads((trained[0] / "all_results.json").read_text())["eval_perplexity"]
    assert math.isclose(inside, precomputed, rel_tol=2e-4), (inside, precomputed)


def test_two_cpu_processes_train_one_model(tmp_path, cache_dir):
    accelerate_config = ROOT / "configuration" / "accelerate" / "cpu_ddp.yaml"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config)]
    config = tiny_run_config(tmp_path / "out", tmp_path / "ddp-cache", log_level_replica="info")
    run_training(config, tmp_path, launcher=launcher)
    # the precompute is split between the ranks, then joined once
    records = {r["split"]: r for r in cache_records(tmp_path / "ddp-cache")}
    assert records["train"]["sentences_per_rank"] == [32, 32]
    assert records["validation"]["sentences_per_rank"] == [12, 12]
    assert len(list((tmp_path / "ddp-cache").rglob("*.partial*"))) == 0
    results = json.loads((tmp_path / "out" / "all_results.json").read_text())
    # 64 sentences, 16 per device, 2 devices: 2 optimizer steps in one epoch
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and results["train_samples"] == 64
    AutoModelForCausalLM.from_pretrained(tmp_path / "out", trust_remote_code=True)


def test_a_checkpoint_of_another_build_or_a_cut_weights_file_is_refused_before_resuming(tmp_path):
    """Resuming builds the model from the run's flags, then loads the checkpoint into it: a checkpoint of another
    fusion, size or context is refused naming the flag (not torch's size mismatch, or a config that would claim a
    context the weights never saw); a weights file cut short is refused naming the checkpoint."""
    from fusion_lstm_training.clm import check_resume

    checkpoint = tmp_path / "checkpoint-10"
    FusionLSTMForCausalLM.from_encoder_pretrained(fusion="concat", **TINY).save_pretrained(checkpoint)
    config = FusionLSTMForCausalLM.from_pretrained(checkpoint).config
    check_resume(str(checkpoint), config)  # the same build resumes
    for changes, named in (({"fusion": "init_h"}, "--fusion"), ({"hidden_size": TINY["hidden_size"] + 8},
                                                                 "--config_overrides hidden_size="),
                           ({"context_sentences": 2, "context_as_tokens": True}, "--context_sentences, "
                                                                                 "--context_as_tokens")):
        other = config.__class__.from_dict({**config.to_dict(), **changes})
        with pytest.raises(ValueError, match=f"checkpoint-10 was trained with .*drop or change {named}"):
            check_resume(str(checkpoint), other)
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match="checkpoint-10: model.safetensors cannot be read .* earlier checkpoint"):
        check_resume(str(checkpoint), config)


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path, cache_dir):
    steps = {"max_steps": 8, "save_strategy": "steps", "save_steps": 2, "eval_strategy": "no", "learning_rate": 0.005}
    reference = run_training(tiny_run_config(tmp_path / "reference", cache_dir, **steps), tmp_path)
    assert reference.returncode == 0

    out = tmp_path / "killed"
    process = run_training(tiny_run_config(out, cache_dir, **steps), tmp_path, background=True)
    deadline = time.monotonic() + 300
    while not (out / "checkpoint-2" / "trainer_state.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "all_results.json").exists(), "the run finished before it was killed"

    checkpoint = str(out / "checkpoint-2")
    run_training(tiny_run_config(out, cache_dir, resume_from_checkpoint=checkpoint, **steps), tmp_path)
    expected = json.loads((tmp_path / "reference" / "all_results.json").read_text())["eval_loss"]
    resumed = json.loads((out / "all_results.json").read_text())["eval_loss"]
    assert abs(resumed - expected) < 1e-4


def test_fusion_dropout_schedule_holds_each_level_for_an_equal_part(tmp_path, cache_dir):
    # 64 sentences, batch 16, 5 epochs: 20 steps, each of the 5 levels held for 4; the model evaluated without e_j too
    config = tiny_run_config(tmp_path / "out", cache_dir, num_train_epochs=5, fusion_dropout_schedule="0to1",
                             fusion_dropout_mode="element", eval_without_fusion=True)
    run_training(config, tmp_path)
    history = json.loads((tmp_path / "out" / "trainer_state.json").read_text())["log_history"]
    assert [(h["step"], h["fusion_dropout"]) for h in history if "fusion_dropout" in h] == [
        (0, 0.0), (4, 0.25), (8, 0.5), (12, 0.75), (16, 1.0)]
    # the schedule is training state: the saved model keeps the configured rate, not the last level
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["fusion_dropout"] == 0.0 and saved["fusion_dropout_mode"] == "element"
    results = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert results["eval_without_fusion_loss"] != results["eval_loss"]


@pytest.mark.parametrize("fusion, source", [("concat", "zeros"), ("concat", "shuffled"), ("embedding_only", "count"),
                                            ("concat", "tfidf")])
def test_vector_sources_are_fused_through_the_cache(tmp_path, fusion, source):
    from datasets import Dataset

    cache = tmp_path / "cache"  # its own: what this run's source wrote, and nothing else
    config = tiny_run_config(tmp_path / "out", cache, fusion=fusion, fusion_vectors=source, fusion_vectors_size=40)
    run_training(config, tmp_path)
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    # a model fed external vectors has no encoder of its own; shuffled permutes the encoder's vectors
    assert (saved.get("encoder") is not None) == (source == "shuffled")
    width = {"zeros": 384, "shuffled": 384}.get(source, 40)
    assert saved["fusion_embedding_size"] == width
    results = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert math.isfinite(results["eval_loss"])
    # the run read its e_j from the cache: one view per split it used, each a row of vectors of the model's width
    # per sentence, written by this source (zeros: only zeros)
    views = sorted(cache.glob("*/view-*.arrow"))
    records = [json.loads(v.with_suffix(".json").read_text()) for v in views]
    assert {r["split"] for r in records} == {"train", "validation"}
    for view, record in zip(views, records):
        rows = Dataset.from_file(str(view)).with_format("numpy")["fusion_embeds"]
        assert len(rows) == record["sentences"] and all(row.shape[-1] == width for row in rows)
        if source == "zeros":
            assert all(not row.any() for row in rows)


def test_constant_vectors_are_the_encoders_empty_window_at_every_position(tmp_path, encoder_path):
    """The control for a fixed e_j: one vector, the encoder's of an empty window ([CLS][SEP], what BOS reads), at
    every position of every sentence."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    from modeling_fusion_lstm.prefix_encoder_fusion_lstm import FusionLSTMPrefixEncoder

    cache = tmp_path / "cache"  # the precompute alone (--embed_only): what the run would train on
    run_training(tiny_run_config(tmp_path / "out", cache, fusion_vectors="constant", embed_only=True), tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(encoder_path)
    encoder = FusionLSTMPrefixEncoder.from_encoder_pretrained(encoder_path, eos_token_id=tokenizer.sep_token_id,
                                                              vocab_size=len(tokenizer)).eval()
    with torch.no_grad():
        empty = encoder.embed_texts([""], tokenizer)[0]
        bos = encoder(torch.tensor([[tokenizer.cls_token_id]]), torch.ones(1, 1, dtype=torch.long), num_new=1)[0, 0]
    torch.testing.assert_close(empty, bos)  # the vector BOS's position reads in the prefix model
    (view,) = [v for v in cache.glob("*/view-*.arrow") if json.loads(v.with_suffix(".json").read_text())["split"]
               == "train"]
    vectors = np.concatenate(list(Dataset.from_file(str(view)).with_format("numpy")["fusion_embeds"]))
    assert (vectors == vectors[0]).all() and np.allclose(vectors[0], empty.numpy(), atol=2e-3)


def test_zero_vectors_teach_nothing_and_shuffled_ones_little(tmp_path, cache_dir):
    losses = {}
    for source in ("encoder", "zeros", "shuffled"):
        out = tmp_path / source
        run_training(tiny_run_config(out, cache_dir, fusion="embedding_only", fusion_vectors=source,
                                     num_train_epochs=3, max_train_samples=128), tmp_path)
        losses[source] = json.loads((out / "all_results.json").read_text())["eval_loss"]
    # the embedding of the real prefix predicts the next token; another sentence's does not (nor do zeros)
    assert losses["encoder"] < losses["shuffled"] - 0.05 and losses["encoder"] < losses["zeros"] - 0.05


def test_a_users_own_vector_source(tmp_path, cache_dir):
    # the README's example source, by its module path (run_clm.py's folder is on the path)
    config = tiny_run_config(tmp_path / "out", cache_dir, fusion_vectors="examples.prefix_length_vectors:build")
    run_training(config, tmp_path)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["fusion_embedding_size"] == 3
    # its vectors went through the embedding cache, in a store named by the source's fingerprint
    assert len(list((Path(cache_dir) / "prefix-length-v1").glob("view-*.arrow"))) == 2  # train and validation
    bad = run_training({**config, "fusion_vectors": "examples.prefix_length_vectors:nothing"}, tmp_path, check=False)
    assert bad.returncode != 0 and "cannot import nothing" in bad.log


def test_trained_bpe_tokenizer_gets_prefix_embeddings_from_text(tmp_path, encoder_path):
    """With a BPE trained on the training text, the cached e_j of a training sentence are the encoder's vectors of
    the text of each prefix, read by the encoder's own tokenizer."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    from fusion_lstm_data.files import read_sentences
    from fusion_lstm_training.data import tokenize_sentences

    config = tiny_run_config(tmp_path / "out", tmp_path / "cache", train_tokenizer_vocab_size=400)
    run_training(config, tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out", trust_remote_code=True).eval()
    bpe = AutoTokenizer.from_pretrained(tmp_path / "out", trust_remote_code=True)
    assert model.config.vocab_size == 400 == len(bpe) and model.config.bos_token_id == bpe.bos_token_id
    first = next(s for s in read_sentences(config["train_file"]) if s.strip())
    row = tokenize_sentences(Dataset.from_dict({"text": [first]}), bpe, config["max_seq_length"], "train",
                             keep_offsets=True)[0]
    (view,) = [v for v in (tmp_path / "cache").glob("*/view-*.arrow")
               if json.loads(v.with_suffix(".json").read_text())["split"] == "train"]
    cached = torch.tensor(Dataset.from_file(str(view)).with_format("numpy")[0]["fusion_embeds"]).float()
    encoder_tokenizer = AutoTokenizer.from_pretrained(encoder_path)
    with torch.no_grad():
        expected = model.prefix_encoder.embed_texts([row["text"][: end] for end in row["offsets"]],
                                                    encoder_tokenizer)
    assert cached.shape == expected.shape == (len(row["input_ids"]), model.config.fusion_embedding_size)
    torch.testing.assert_close(cached, expected, rtol=2e-3, atol=2e-3)


# --------------------------------------------------------------------------------------------- bad input


def test_a_used_output_dir_is_refused_unless_overwritten(trained, cache_dir, tmp_path):
    output_dir, _ = trained
    before = {p.name: p.stat().st_mtime_ns for p in output_dir.iterdir()}
    result = run_training(tiny_run_config(output_dir, cache_dir), tmp_path, check=False)
    assert result.returncode != 0 and "--overwrite_output_dir" in result.log
    assert {p.name: p.stat().st_mtime_ns for p in output_dir.iterdir()} == before  # nothing lost
    copy = tmp_path / "copy"
    shutil.copytree(output_dir, copy)
    (copy / "checkpoint-4").mkdir()
    (copy / "checkpoint-4" / "trainer_state.json").write_text("{}")
    result = run_training(tiny_run_config(copy, cache_dir), tmp_path, check=False)
    assert result.returncode != 0 and f"--resume_from_checkpoint {copy / 'checkpoint-4'}" in result.log
    run_training(tiny_run_config(copy, cache_dir, overwrite_output_dir=True), tmp_path)
    assert (copy / "all_results.json").stat().st_mtime_ns > before["all_results.json"]  # trained again


def test_unknown_fusion_surfaces_the_models_error(tmp_path):
    result = run_training(tiny_run_config(tmp_path / "out", tmp_path / "c", fusion="bogus"), tmp_path, check=False)
    assert result.returncode != 0 and "'bogus'" in result.log
    assert not (tmp_path / "out").exists() and not (tmp_path / "c").exists()  # refused before any work


def test_non_fusion_checkpoint_is_refused(tmp_path, encoder_path):
    config = tiny_run_config(tmp_path / "out", tmp_path / "c", model_name_or_path=encoder_path)
    result = run_training(config, tmp_path, check=False)
    assert result.returncode != 0 and "--encoder_name_or_path" in result.log  # the error names the way out
    assert not (tmp_path / "c").exists()


def test_training_continues_from_a_fusion_checkpoint(trained, cache_dir, tmp_path):
    checkpoint, _ = trained
    config = tiny_run_config(tmp_path / "continued", cache_dir, model_name_or_path=str(checkpoint), fusion=None,
                             config_overrides=None)
    before = cache_files(cache_dir)
    run_training(config, tmp_path)
    assert cache_files(cache_dir) == before  # the saved encoder is the one that built the cache
    continued = json.loads((tmp_path / "continued" / "config.json").read_text())
    assert continued["fusion"] == "concat" and continued["hidden_size"] == TINY["hidden_size"]


def test_early_stopping_ends_training_when_the_validation_loss_stops_improving(tmp_path, cache_dir):
    """With a learning rate of 0 the validation loss never improves after the first evaluation: patience 1 stops the
    run after the second of its 4 epochs, and the tokens/s counts the epochs trained. The test set's evaluation after
    training is not early stopping's business: it says nothing about it."""
    config = tiny_run_config(tmp_path / "out", cache_dir, fusion="none", learning_rate=0.0, num_train_epochs=4,
                             eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
                             metric_for_best_model="eval_loss", early_stopping_patience=1,
                             test_file=str(DATA / "test.txt"), do_predict=True)
    result = run_training(config, tmp_path)
    assert "early stopping is disabled" not in result.log
    results = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert results["train_epochs"] == 2.0
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert [round(h["epoch"]) for h in state["log_history"] if "eval_loss" in h][:2] == [1, 2]
    refused = run_training(tiny_run_config(tmp_path / "out2", cache_dir, early_stopping_patience=1), tmp_path,
                           check=False)
    assert refused.returncode != 0 and "--early_stopping_patience compares evaluations" in refused.log
