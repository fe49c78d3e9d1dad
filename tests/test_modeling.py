"""Forward semantics: causality first, then equivalence with naive per-prefix references, padding, save/load."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from modeling_fusion_lstm import FUSIONS, FusionLSTMConfig, FusionLSTMForCausalLM, FusionLSTMModel, FusionStage
from fusion_lstm_training.reference import naive_logits, naive_prefix_embedding
from helpers import ALL_FUSIONS, ROOT, SENTENCES, TINY


def real_logits(model, ids, mask=None):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


# ---------------------------------------------------------------------------------------------------- causality


@pytest.mark.parametrize("fusion", ALL_FUSIONS)
def test_changing_token_k_leaves_earlier_logits_unchanged(make_model, tokenizer, fusion):
    model = make_model(fusion)
    ids = tokenizer(["The quick brown fox jumps over the lazy dog."], return_tensors="pt")["input_ids"]
    reference = real_logits(model, ids)
    for k in (1, 4, ids.shape[1] - 1):
        changed = ids.clone()
        changed[0, k] = tokenizer.convert_tokens_to_ids("banana")
        logits = real_logits(model, changed)
        torch.testing.assert_close(logits[:, :k], reference[:, :k], rtol=0, atol=1e-6)
        assert not torch.allclose(logits[:, k], reference[:, k]), "token k must influence its own position"


@pytest.mark.parametrize("fusion", ["concat", "init_hc"])
def test_sentence_context_is_the_leaky_probe(make_model, tokenizer, fusion):
    # fusion_context="sentence" gives every position the whole sentence's embedding: the future leaks on purpose
    model = make_model(fusion, fusion_context="sentence")
    ids = tokenizer(["The quick brown fox jumps."], return_tensors="pt")["input_ids"]
    changed = ids.clone()
    changed[0, -1] = tokenizer.convert_tokens_to_ids("banana")
    assert not torch.allclose(real_logits(model, ids)[:, 0], real_logits(model, changed)[:, 0])


@pytest.mark.parametrize("context", ["subr", "subl"])
@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
def test_sub_prefix_feeders_embed_the_cropped_prefix(make_model, tokenizer, context, fraction):
    model = make_model("concat", fusion_context=context, fusion_context_fraction=fraction)
    batch = tokenizer(SENTENCES, return_tensors="pt", padding=True)
    with torch.no_grad():
        got = model(**batch).fusion_embeds
        for b in range(len(SENTENCES)):
            ids = batch["input_ids"][b, : int(batch["attention_mask"][b].sum())]
            for j in range(len(ids)):
                torch.testing.assert_close(got[b, j], naive_prefix_embedding(model, ids, j), rtol=1e-4, atol=1e-5)


def test_sub_prefix_feeders_read_the_sentence_length(make_model, tokenizer):
    # c = int(k·|S|) depends on |S|: one token more at the end moves the window of earlier positions (documented)
    ids = tokenizer(["one two three four five six seven eight"], return_tensors="pt")["input_ids"]
    longer = torch.cat([ids, ids[:, 1:5]], dim=1)
    for context in ("subr", "subl"):
        model = make_model("concat", fusion_context=context, fusion_context_fraction=0.5)
        with torch.no_grad():
            short, long = model(input_ids=ids).fusion_embeds, model(input_ids=longer).fusion_embeds
        assert not torch.allclose(short[0, -1], long[0, ids.shape[1] - 1], atol=1e-4), context


# ------------------------------------------------------------------------------------- naive per-prefix references


@pytest.mark.parametrize("fusion", ALL_FUSIONS)
@pytest.mark.parametrize("layers", [1, 2])
def test_batched_forward_equals_naive_per_prefix_loop(make_model, tokenizer, fusion, layers):
    model = make_model(fusion, num_hidden_layers=layers)
    ids = tokenizer(["Early fusion restarts the LSTM at every position."], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = naive_logits(model, ids[0])
    torch.testing.assert_close(real_logits(model, ids)[0], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "mean", "pooler"])
def test_prefix_embeddings_match_one_encoder_call_per_prefix(make_model, tokenizer, pooling):
    model = make_model("concat", encoder_pooling=pooling)
    batch = tokenizer(SENTENCES, return_tensors="pt", padding=True)
    with torch.no_grad():
        got = model(**batch).fusion_embeds
        for b in range(len(SENTENCES)):
            n = int(batch["attention_mask"][b].sum())
            for j in range(n):
                expected = naive_prefix_embedding(model, batch["input_ids"][b], j)
                torch.testing.assert_close(got[b, j], expected, rtol=1e-4, atol=1e-5)
            assert torch.all(got[b, n:] == 0)


def test_long_prefixes_keep_first_and_most_recent_tokens(tokenizer):
    model = FusionLSTMForCausalLM.from_encoder_pretrained(fusion="concat", **TINY).eval()
    prefix_encoder = model.prefix_encoder
    prefix_encoder.max_length = 6  # [CLS] + 4 most recent tokens + [SEP]
    ids = tokenizer(["one two three four five six seven"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        got = model(input_ids=ids).fusion_embeds[0]
        for j in range(ids.shape[1]):
            window = ids[0, : j + 1] if j + 1 <= 5 else torch.cat([ids[0, :1], ids[0, j - 3 : j + 1]])
            row = torch.cat([window, torch.tensor([model.config.eos_token_id])]).unsqueeze(0)
            assert row.shape[1] <= 6
            expected = prefix_encoder.encoder(input_ids=row).last_hidden_state[0, 0]
            torch.testing.assert_close(got[j], expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------------- padding


@pytest.mark.parametrize("fusion", ALL_FUSIONS)
def test_left_and_right_padding_give_the_logits_of_each_sequence_alone(make_model, tokenizer, fusion):
    model = make_model(fusion)
    alone = [real_logits(model, tokenizer([s], return_tensors="pt")["input_ids"])[0] for s in SENTENCES]
    for side in ("right", "left"):
        tokenizer.padding_side = side
        try:
            batch = tokenizer(SENTENCES, return_tensors="pt", padding=True)
        finally:
            tokenizer.padding_side = "right"
        logits = real_logits(model, batch["input_ids"], batch["attention_mask"])
        for b, expected in enumerate(alone):
            got = logits[b][batch["attention_mask"][b].bool()]
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=f"{side} padding, row {b}")


# ------------------------------------------------------------------------------------------- fusion_embeds input


@pytest.mark.parametrize("fusion", ["concat", "multiply", "init_c"])
def test_given_fusion_embeds_replace_the_encoder(make_model, batch, fusion):
    model = make_model(fusion)
    with torch.no_grad():
        computed = model(**batch)
        given = model(**batch, fusion_embeds=computed.fusion_embeds)
        other = model(**batch, fusion_embeds=torch.randn_like(computed.fusion_embeds))
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(given.logits[mask], computed.logits[mask])
    assert not torch.allclose(other.logits[mask], computed.logits[mask])


def test_fusion_dropout_modes(make_model, batch):
    embeds = torch.randn(*batch["input_ids"].shape, 384) + 3.0  # no element is zero by chance
    model = FusionLSTMForCausalLM.from_encoder_pretrained(fusion="concat", fusion_dropout=0.5, **TINY)
    model.train()
    dropped = model(**batch, fusion_embeds=embeds).fusion_embeds
    rows = dropped.reshape(-1, 384)
    # vector (the default): whole vectors zeroed, the others untouched
    assert set((rows == 0).all(1).tolist()) == {True, False}
    kept = ~(rows == 0).all(1)
    torch.testing.assert_close(rows[kept], embeds.reshape(-1, 384)[kept])
    # element (the paper's code): single elements zeroed, the rest scaled by 1 / (1 - p)
    model.config.fusion_dropout_mode = "element"
    dropped = model(**batch, fusion_embeds=embeds).fusion_embeds
    zero = dropped == 0
    assert 0.3 < zero.float().mean() < 0.7 and not zero.all(-1).any()
    torch.testing.assert_close(dropped[~zero], 2 * embeds[~zero])
    # evaluation: no dropout, unless asked for; p = 1 during evaluation zeroes every e_j
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch, fusion_embeds=embeds).fusion_embeds, embeds)
        zeroed = model(**batch, fusion_embeds=torch.zeros_like(embeds)).logits
        model.set_fusion_dropout(1.0, during_eval=True)
        out = model(**batch, fusion_embeds=embeds)
    assert torch.all(out.fusion_embeds == 0)
    torch.testing.assert_close(out.logits, zeroed)


def test_model_without_encoder_runs_on_fusion_embeds_alone():
    config = FusionLSTMConfig(vocab_size=50, fusion="add", fusion_embedding_size=24, fusion_projection=False, **TINY)
    model = FusionLSTMForCausalLM(config).eval()
    assert model.prefix_encoder is None and model.model.recurrence.fusion_projection is None
    ids = torch.randint(0, 50, (2, 7))
    out = model(input_ids=ids, fusion_embeds=torch.randn(2, 7, 24), labels=ids)
    assert out.logits.shape == (2, 7, 50) and torch.isfinite(out.loss)


# ---------------------------------------------------------------------------------------------------------- loss


def test_loss_is_shifted_cross_entropy_ignoring_minus_100(make_model, batch):
    model = make_model("concat")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        out = model(**batch, labels=labels)
    expected = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].reshape(-1, model.config.vocab_size), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(out.loss, expected)


def test_token_type_ids_from_a_bert_tokenizer_are_accepted(make_model, encoder_path):
    from transformers import AutoTokenizer

    bert_batch = AutoTokenizer.from_pretrained(encoder_path)(SENTENCES[:1], return_tensors="pt")
    assert "token_type_ids" in bert_batch
    assert make_model("concat")(**bert_batch).logits.shape[1] == bert_batch["input_ids"].shape[1]


# ----------------------------------------------------------------------------------------------- encoder freezing


def test_encoder_is_frozen_and_stays_in_eval_mode(tmp_path, make_model):
    model = FusionLSTMForCausalLM.from_encoder_pretrained(fusion="concat", **TINY)
    model.train()
    encoder = model.prefix_encoder.encoder
    assert not any(p.requires_grad for p in encoder.parameters())
    assert not encoder.training and model.model.recurrence.training
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).train()
    assert not any(p.requires_grad for p in loaded.prefix_encoder.parameters())
    assert not loaded.prefix_encoder.encoder.training
    assert all(p.requires_grad for p in loaded.model.recurrence.parameters())


def test_unfrozen_encoder_gets_gradients(batch):
    model = FusionLSTMForCausalLM.from_encoder_pretrained(fusion="concat", freeze_encoder=False, **TINY).train()
    model(**batch, labels=batch["input_ids"]).loss.backward()
    grads = [p.grad for p in model.prefix_encoder.encoder.parameters() if p.requires_grad]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)


def test_none_model_leaves_the_encoder_out():
    model = FusionLSTMForCausalLM.from_encoder_pretrained(fusion="none", **TINY)
    assert model.config.encoder is None and model.prefix_encoder is None
    assert model.config.vocab_size == 30522


# ------------------------------------------------------------------------------------------- HF integration


def test_auto_classes_resolve_fusion_lstm():
    config = AutoConfig.for_model("fusion_lstm", fusion="none", vocab_size=40, **TINY)
    assert isinstance(config, FusionLSTMConfig)
    assert isinstance(AutoModel.from_config(config), FusionLSTMModel)
    assert isinstance(AutoModelForCausalLM.from_config(config), FusionLSTMForCausalLM)


@pytest.mark.parametrize("fusion", ["none", "concat", "init_hc"])
def test_save_and_load_give_identical_logits(tmp_path, make_model, tokenizer, batch, fusion):
    model = make_model(fusion)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    assert {"modeling_fusion_lstm.py", "configuration_fusion_lstm.py"} <= files
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert not loaded.training
    mask = batch["attention_mask"].bool()
    # same weights; the loaded LSTM's parameter memory layout may reorder float sums (differences ~1e-10)
    expected = real_logits(model, batch["input_ids"], batch["attention_mask"])[mask]
    got = real_logits(loaded, batch["input_ids"], batch["attention_mask"])[mask]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    backbone = AutoModel.from_pretrained(tmp_path)
    assert isinstance(backbone, FusionLSTMModel)


def test_a_checkpoint_saved_before_the_context_fields_continues_and_scores_with_their_defaults(
        tmp_path, make_model, tokenizer, batch):
    """A config.json without context_sentences, context_as_tokens and max_context_length (as saved before they
    existed) is read by this package's config with their defaults: training continues it sentence by sentence and
    run_surprisal scores it with the logits it was saved with. Another model type is refused by name."""
    from transformers import GPT2Config

    from fusion_lstm_surprisal.readers import FusionLM
    from fusion_lstm_surprisal.score import load_model as load_for_scoring
    from fusion_lstm_training.clm import ModelArguments, context_reading

    model = make_model("concat")
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    fields = ("context_sentences", "context_as_tokens", "max_context_length")
    assert all(field in saved for field in fields)
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in saved.items() if k not in fields}))
    assert context_reading(ModelArguments(model_name_or_path=str(tmp_path))) == (0, 128)
    loaded, _, _ = load_for_scoring(str(tmp_path))
    assert FusionLM.trained_context(loaded.config) == 0
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(real_logits(loaded, batch["input_ids"], batch["attention_mask"])[mask],
                               real_logits(model, batch["input_ids"], batch["attention_mask"])[mask], rtol=0, atol=1e-6)
    GPT2Config(n_layer=1).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="is a 'gpt2' model, not a fusion_lstm checkpoint.*--encoder_name_or_path"):
        context_reading(ModelArguments(model_name_or_path=str(tmp_path / "gpt2")))


def test_encoder_weights_are_saved_in_the_same_safetensors_file(tmp_path, make_model):
    from safetensors import safe_open

    make_model("concat").save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("model.prefix_encoder.encoder.") for k in keys)
    assert any(k.startswith("model.recurrence.lstm.") for k in keys)


# ------------------------------------------------------------------------------------------- the FUSIONS table


@pytest.mark.parametrize("fusion", ALL_FUSIONS)
def test_the_model_is_built_as_the_table_says(fusion):
    spec = FUSIONS[fusion]
    model = FusionLSTMForCausalLM(FusionLSTMConfig(vocab_size=40, fusion=fusion, fusion_embedding_size=12, **TINY))
    assert model.model.dense.in_features == TINY["hidden_size"] + (12 if spec.concatenates else 0)
    alone = spec.stage == FusionStage.ALONE
    assert (model.model.recurrence.fusion_projection is not None) == (spec.elementwise or alone)
    assert (model.model.recurrence.lstm is None) == alone
    assert model.config.is_early_fusion == (spec.stage == FusionStage.EARLY)
    assert model.config.uses_fusion == (spec.stage != FusionStage.NONE)
    ids = torch.randint(0, 40, (1, 4))
    embeds = None if fusion == "none" else torch.randn(1, 4, 12)
    assert model(input_ids=ids, fusion_embeds=embeds).logits.shape == (1, 4, 40)
    numbered = sorted(s.paper_variant for s in FUSIONS.values() if s.paper_variant is not None)
    assert numbered == list(range(7))


def test_embedding_only_is_an_mlp_on_e_j_alone():
    config = FusionLSTMConfig(vocab_size=40, fusion="embedding_only", fusion_embedding_size=12, **TINY)
    model = FusionLSTMForCausalLM(config).eval()
    ids, embeds = torch.randint(0, 40, (2, 5)), torch.randn(2, 5, 12)
    with torch.no_grad():
        logits = model(input_ids=ids, fusion_embeds=embeds).logits
        other_tokens = model(input_ids=torch.randint(0, 40, (2, 5)), fusion_embeds=embeds).logits
        m = model.model
        by_hand = model.lm_head(torch.relu(m.dense(torch.relu(m.recurrence.fusion_projection(embeds)))))
    torch.testing.assert_close(logits, by_hand)
    torch.testing.assert_close(other_tokens, logits)  # the tokens reach the prediction only through e_j
    assert not any("recurrence.lstm" in name for name, _ in model.named_parameters())


def test_a_strategy_with_a_row_but_no_function_fails_at_import(tmp_path):
    package = tmp_path / "variant_package"
    shutil.copytree(ROOT / "modeling_fusion_lstm", package, ignore=shutil.ignore_patterns("__pycache__"))
    config_file = package / "configuration_fusion_lstm.py"
    row = ('FUSIONS["gate"] = FusionSpec(paper_variant=7, stage=FusionStage.LATE, elementwise=True, '
           'concatenates=False, description="a gated sum")\n')
    anchor = "FUSION_CHOICES = tuple(FUSIONS)"
    config_file.write_text(config_file.read_text().replace(anchor, row + anchor))
    result = subprocess.run([sys.executable, "-c", "import variant_package"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0 and "ImportError" in result.stderr and "'gate'" in result.stderr


# ------------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "field, value, allowed",
    [("fusion", "late", "concat"), ("encoder_pooling", "max", "mean"), ("fusion_context", "future", "sentence"),
     ("fusion_dropout_mode", "rows", "element")],
)
def test_unknown_choices_name_the_field_and_the_allowed_values(field, value, allowed):
    with pytest.raises(ValueError, match=rf"{field}='{value}'.*allowed values:.*{allowed}"):
        FusionLSTMConfig(**{field: value})


@pytest.mark.parametrize("fusion", ["add", "multiply", "init_h", "init_c", "init_hc"])
def test_width_mismatch_without_projection_is_refused(fusion):
    with pytest.raises(ValueError, match="fusion_embedding_size \\(384\\) must equal hidden_size \\(24\\)"):
        FusionLSTMConfig(fusion=fusion, fusion_embedding_size=384, fusion_projection=False, **TINY)
    FusionLSTMConfig(fusion="concat", fusion_embedding_size=384, fusion_projection=False, **TINY)  # concat is fine


@pytest.mark.parametrize("shape", [(3, 24), (1, 3, 5, 24), (1, 3, 23), (1, 4, 24), (2, 3, 24)])
def test_fusion_embeds_of_wrong_shape_are_refused(shape):
    model = FusionLSTMForCausalLM(FusionLSTMConfig(vocab_size=40, fusion_embedding_size=24, **TINY))
    with pytest.raises(ValueError, match=r"fusion_embeds must have shape .* = \(1, 3, 24\), got"):
        model(input_ids=torch.zeros(1, 3, dtype=torch.long), fusion_embeds=torch.zeros(shape))


def test_fusion_embeds_for_a_model_without_fusion_are_refused(make_model):
    with pytest.raises(ValueError, match="fusion='none' uses no prefix embeddings"):
        make_model("none")(input_ids=torch.tensor([[101, 2000]]), fusion_embeds=torch.zeros(1, 2, 384))


def test_fusion_without_encoder_or_embeds_says_what_to_pass():
    model = FusionLSTMForCausalLM(FusionLSTMConfig(vocab_size=40, **TINY))
    with pytest.raises(ValueError, match="has no encoder: pass `fusion_embeds`"):
        model(input_ids=torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"generate\(\) needs e_j of every new token.*no encoder"):
        model.generate(torch.zeros(1, 3, dtype=torch.long), max_new_tokens=2)
    with pytest.raises(TypeError, match="fusion_embeds must be a torch.Tensor .* got a list"):
        model(input_ids=torch.zeros(1, 3, dtype=torch.long), fusion_embeds=[[0.0] * 768] * 3)


@pytest.mark.parametrize("field, value", [("fusion_embedding_size", 0), ("fusion_embedding_size", -4),
                                          ("initializer_range", -0.1)])
def test_sizes_and_ranges_out_of_bounds_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"FusionLSTMConfig.{field} must be"):
        FusionLSTMConfig(**{field: value})


@pytest.mark.parametrize("bad_id", [-1, 30522, 99999])
def test_out_of_vocabulary_ids_are_refused(make_model, bad_id):
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 30522\)"):
        make_model("concat")(input_ids=torch.tensor([[101, bad_id]]))


def test_empty_batches_and_empty_sequences_are_refused(make_model):
    model = make_model("concat")
    for ids in (torch.zeros(0, 4, dtype=torch.long), torch.zeros(2, 0, dtype=torch.long)):
        with pytest.raises(ValueError, match="empty batch"):
            model(input_ids=ids)
    with pytest.raises(ValueError, match=r"Sequences \[1\] of the batch are empty"):
        model(input_ids=torch.tensor([[101, 2000], [0, 0]]), attention_mask=torch.tensor([[1, 1], [0, 0]]))


def test_vocabulary_other_than_the_encoders_needs_fusion_embeds(encoder_path):
    model = FusionLSTMForCausalLM.from_encoder_pretrained(fusion="concat", vocab_size=100, **TINY)
    with pytest.raises(ValueError, match=r"vocabulary \(100 tokens\) is not its encoder's \(30522\)"):
        model(input_ids=torch.tensor([[1, 2, 3]]))


@pytest.mark.parametrize("mask", [[[2, 2, 2, 2]], [[1, 1, -1, 1]], [[1.0, 0.5, 1.0, 1.0]]])
def test_attention_masks_other_than_0_and_1_are_refused(make_model, mask):
    ids = torch.tensor([[101, 2000, 2001, 2002]])
    with pytest.raises(ValueError, match="attention_mask must hold only 0 and 1"):
        make_model("concat")(input_ids=ids, attention_mask=torch.tensor(mask))
    boolean = torch.tensor([[True, True, True, False]])
    torch.testing.assert_close(make_model("concat")(input_ids=ids, attention_mask=boolean).logits[:, :3],
                               make_model("concat")(input_ids=ids[:, :3]).logits)


def test_probe_options_are_checked():
    with pytest.raises(ValueError, match="fusion_context_fraction"):
        FusionLSTMConfig(fusion_context="subl", fusion_context_fraction=1.5)
    with pytest.raises(ValueError, match="embedding_only.*fusion_projection=True"):
        FusionLSTMConfig(fusion="embedding_only", fusion_projection=False)


def test_a_causal_lm_encoder_is_refused_with_cls_pooling_and_its_last_token_pools_the_prefix(tmp_path, tokenizer):
    from transformers import GPT2Config, GPT2Model

    from fusion_lstm_training.reference import naive_prefix_embedding

    torch.manual_seed(0)
    GPT2Model(GPT2Config(vocab_size=30522, n_positions=32, n_embd=16, n_layer=1, n_head=2)).save_pretrained(
        tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")  # the LM reads the encoder's vocabulary
    with pytest.raises(ValueError, match="is a causal LM, whose first token sees only itself.*encoder_pooling='last'"):
        FusionLSTMForCausalLM.from_encoder_pretrained(str(tmp_path / "gpt2"), fusion="concat", **TINY)
    model = FusionLSTMForCausalLM.from_encoder_pretrained(str(tmp_path / "gpt2"), fusion="concat",
                                                          encoder_pooling="last", **TINY).eval()
    ids = torch.tensor([101, 2023, 2003, 1037, 3231, 102])
    with torch.no_grad():
        e = model(input_ids=ids[None]).fusion_embeds[0]
        expected = torch.stack([naive_prefix_embedding(model, ids, j) for j in range(len(ids))])
    torch.testing.assert_close(e, expected, atol=1e-5, rtol=1e-5)
    assert all(not torch.allclose(e[j], e[j + 1]) for j in range(len(ids) - 1))  # every prefix its own vector


def test_a_gpt2_encoder_reads_text_windows_between_its_bos_and_eos(tmp_path):
    """The text path (an LM with a BPE of its own) with an encoder whose tokenizer has no [CLS]/[SEP]: its BOS and EOS
    start and end each window; a tokenizer with neither is refused, naming it."""
    import copy

    from transformers import GPT2Config, GPT2Model

    from fusion_lstm_training.bpe import build_bpe_tokenizer
    from helpers import DATA

    lines = [s for s in (DATA / "train.txt").read_text().splitlines() if s.strip()][:200]
    bpe = build_bpe_tokenizer(lines, 300)
    assert bpe.cls_token_id is None and bpe.bos_token_id is not None and bpe.eos_token_id is not None
    torch.manual_seed(0)
    GPT2Model(GPT2Config(vocab_size=len(bpe), n_positions=64, n_embd=16, n_layer=1, n_head=2)).save_pretrained(
        tmp_path / "gpt2")
    model = FusionLSTMForCausalLM.from_encoder_pretrained(str(tmp_path / "gpt2"), fusion="concat",
                                                          encoder_pooling="last", vocab_size=len(bpe), **TINY).eval()
    with torch.no_grad():
        vectors = model.prefix_encoder.embed_texts(["It was", "It"], bpe)
    assert vectors.shape == (2, 16) and torch.isfinite(vectors).all() and not torch.allclose(vectors[0], vectors[1])
    bare = copy.deepcopy(bpe)
    bare.bos_token = bare.eos_token = None
    with pytest.raises(ValueError, match="declares no start token .cls or bos. or no end token"):
        model.prefix_encoder.embed_texts(["It was"], bare)


def test_one_table_says_what_each_fusion_context_reads():
    """CONTEXTS is the one table: choices, document modes, probes, parts, run_clm's help and the windows derive from
    it, and every single-window mode has its window."""
    import fusion_lstm_training.clm as clm
    from modeling_fusion_lstm.configuration_fusion_lstm import (
        CONTEXTS, DOCUMENT_CONTEXTS, FUSION_CONTEXT_CHOICES, SENTENCE_PROBES,
    )
    from modeling_fusion_lstm.prefix_encoder_fusion_lstm import CONTEXT_WINDOWS, EncoderWindow

    assert FUSION_CONTEXT_CHOICES == tuple(CONTEXTS)
    assert set(DOCUMENT_CONTEXTS) == {"previous", "document", "prefix+previous"}
    assert set(SENTENCE_PROBES) == {"sentence", "subr", "subl"}
    assert CONTEXTS["prefix+previous"].parts == ("prefix", "previous") and CONTEXTS["document"].parts == ("document",)
    assert set(CONTEXT_WINDOWS) == {m for m in CONTEXTS if "+" not in m}
    assert [m for m in CONTEXTS if EncoderWindow(m).is_one_per_sentence] == ["previous"]
    assert [m for m in CONTEXTS if EncoderWindow(m).is_whole_sentence] == ["sentence"]
    help_text = next(f.metadata["help"] for f in clm.dataclass_fields(clm.ModelArguments) if f.name == "fusion_context")
    assert all(f"{mode}: {spec.description}" in help_text for mode, spec in CONTEXTS.items())
    with pytest.raises(ValueError, match="fusion_context.*prefix, sentence, subr, subl, previous, document"):
        FusionLSTMConfig(fusion_context="future")


def test_tied_word_embeddings_share_one_matrix_through_save_and_load(tmp_path):
    """tie_word_embeddings (transformers' standard flag; needs projection_size == embedding_size): the output layer is
    the input embedding, also after save and load; untied, they are two matrices; widths that differ are refused."""
    sizes = {"embedding_size": 16, "hidden_size": 24, "projection_size": 16}
    tied = FusionLSTMForCausalLM.from_encoder_pretrained(fusion="none", tie_word_embeddings=True, **sizes)
    assert tied.lm_head.weight is tied.model.embeddings.weight
    tied.save_pretrained(tmp_path)
    loaded = FusionLSTMForCausalLM.from_pretrained(tmp_path)
    assert loaded.lm_head.weight is loaded.model.embeddings.weight
    torch.testing.assert_close(loaded.lm_head.weight, tied.lm_head.weight)
    untied = FusionLSTMForCausalLM.from_encoder_pretrained(fusion="none", **sizes)
    assert untied.lm_head.weight.data_ptr() != untied.model.embeddings.weight.data_ptr()
    with pytest.raises(ValueError, match="tie_word_embeddings=True needs projection_size"):
        FusionLSTMConfig(fusion="none", tie_word_embeddings=True, embedding_size=16, projection_size=20)
