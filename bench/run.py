"""The speed suite: every number is a ratio against a reference measured in the same run, interleaved A B A B.

    python bench/run.py --quick            # under 3 minutes on 2 cores
    python bench/run.py                    # the full run (see bench/README.md for its time)

Prints a table per section and writes bench/results/{quick,full}.json. Sections:
  train     training tokens/s with precomputed fusion_embeds (none, concat, init_hc) vs a bare batched nn.LSTM LM
            and vs the paper's original per-prefix batch-1 algorithm, re-implemented from its description
  embed     prefix-embedding precompute vs one encoder call per prefix; the cached second run
  precompute  the precompute from text as the cpu-scale runs do it: sentences/s, and the encoder's GFLOP/s beside a
            plain matrix product's (the distance to the machine's limit)
  generate  cached generate() vs a full forward pass per new token, at 16, 64 and 256 new tokens
  memory    peak memory of training on 1k vs 10k sentences with memory-mapped float16 embeddings
  loader    reading and collating a batch's fusion_embeds from the Arrow cache: as Python lists vs as arrays
  context   training tokens/s (scored tokens) of concat with the document's 3 previous sentences (fusion_context
            previous) vs concat sentence by sentence, on the same sentences
"""

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import modeling_fusion_lstm  # noqa: E402
from fusion_lstm_data.batches import FusionDataCollator  # noqa: E402
from fusion_lstm_data.files import read_sentences  # noqa: E402
from fusion_lstm_reproduction.speed import PRECOMPUTE_BEFORE, section_table  # noqa: E402
from fusion_lstm_training.bpe import build_bpe_tokenizer  # noqa: E402
from fusion_lstm_training.precision import PRECISIONS, choose_precision, cpu_description, cpu_text  # noqa: E402
from modeling_fusion_lstm import FusionLSTMConfig, FusionLSTMForCausalLM  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "wikipedia"
DOCUMENTS = ROOT.parent / "shared" / "data" / "documents"
SIZES = {"embedding_size": 512, "hidden_size": 768, "projection_size": 512}  # the paper's
VOCAB = 8192
FUSION_WIDTH = 768  # BERT-base, as in the paper
BATCH = 32


def first_sentences(name: str, limit: int) -> list[str]:
    """The first `limit` non-empty sentences of a Wikipedia split (../shared/data, else the shipped sample)."""
    path = SHARED / name if SHARED.exists() else ROOT / "data" / "wikitext2" / name
    return [line for line in read_sentences(str(path)) if line.strip()][:limit]


def timed(fn, *args, **kwargs) -> float:
    """Seconds that fn(*args, **kwargs) takes."""
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def interleaved(candidates: dict, rounds: int) -> dict[str, list[float]]:
    """Runs every candidate once per round, in turn (A B C A B C …); returns each one's measurements."""
    results = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, run in candidates.items():
            results[name].append(run())
    return results


# ---------------------------------------------------------------------------------------------------------- train


class BareLSTMLM(nn.Module):
    """The reference: a plain batched LSTM LM of the same sizes (embedding → LSTM → dense → vocabulary)."""

    def __init__(self):
        super().__init__()
        self.embeddings = nn.Embedding(VOCAB, SIZES["embedding_size"])
        self.lstm = nn.LSTM(SIZES["embedding_size"], SIZES["hidden_size"], batch_first=True)
        self.dense = nn.Linear(SIZES["hidden_size"], SIZES["projection_size"])
        self.out = nn.Linear(SIZES["projection_size"], VOCAB)

    def loss(self, batch):
        logits = self.out(self.dense(self.lstm(self.embeddings(batch["input_ids"]))[0]))
        return nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), batch["labels"][:, 1:].reshape(-1))


class OriginalAlgorithm(nn.Module):
    """The paper's original training, written from its description: batch size 1; a sentence of L tokens becomes
    L-1 rows of one-hot vectors (row i keeps tokens 0..i, later positions zeroed), embedded by a linear layer,
    run through the LSTM over all L positions (from e_i for early fusion), and row i's output at position i
    predicts token i+1."""

    def __init__(self, fusion: str):
        super().__init__()
        self.fusion = fusion
        self.embed = nn.Linear(VOCAB, SIZES["embedding_size"])
        self.lstm = nn.LSTM(SIZES["embedding_size"], SIZES["hidden_size"], batch_first=True)
        width = SIZES["hidden_size"] + (FUSION_WIDTH if fusion == "concat" else 0)
        self.dense = nn.Linear(width, SIZES["projection_size"])
        self.out = nn.Linear(SIZES["projection_size"], VOCAB)

    def loss(self, ids: torch.Tensor, fusion_embeds: torch.Tensor):
        length = ids.shape[0]
        rows = nn.functional.one_hot(ids, VOCAB).float().unsqueeze(0).repeat(length - 1, 1, 1)
        future = torch.arange(length).unsqueeze(0) > torch.arange(length - 1).unsqueeze(1)
        rows[future] = 0
        e = fusion_embeds[: length - 1]
        state = (e.unsqueeze(0).contiguous(), e.unsqueeze(0).contiguous()) if self.fusion == "init_hc" else None
        outputs = self.lstm(self.embed(rows), state)[0]
        h = outputs[torch.arange(length - 1), torch.arange(length - 1)]
        if self.fusion == "concat":
            h = torch.cat([h, e], dim=-1)
        return nn.functional.cross_entropy(self.out(self.dense(h)), ids[1:])


def bench_train(quick: bool, precisions: tuple[str, ...]) -> dict:
    sentences = first_sentences("train.txt", 28244)
    tokenizer = build_bpe_tokenizer(sentences, VOCAB)
    # sorted by length: a batch is `size` neighbours from a random start, as --group_by_length gives the Trainer
    encoded = sorted((ids + [tokenizer.eos_token_id] for ids in tokenizer(sentences[:2048])["input_ids"]), key=len)
    generator = torch.Generator().manual_seed(0)
    collator = FusionDataCollator(pad_token_id=tokenizer.pad_token_id)

    def batch_of(size):
        """A training batch as run_clm's collator builds it, with random vectors as e_j."""
        start = int(torch.randint(len(encoded) - size + 1, (1,), generator=generator))
        return collator([{"input_ids": ids, "fusion_embeds": torch.randn(len(ids), FUSION_WIDTH, generator=generator)}
                         for ids in encoded[start : start + size]])

    torch.manual_seed(0)
    batched = {"bare LSTM LM": BareLSTMLM()}
    for fusion in ("none", "concat", "init_hc"):
        config = FusionLSTMConfig(vocab_size=VOCAB, fusion=fusion, fusion_embedding_size=FUSION_WIDTH,
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id, **SIZES)
        batched[fusion] = FusionLSTMForCausalLM(config).train()
    originals = {f"original {f}": OriginalAlgorithm(f) for f in ("none", "concat", "init_hc")}
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=1e-5) for name, m in {**batched, **originals}.items()}
    steps, sentences_per_round, rounds = (2, 3, 2) if quick else (5, 10, 3)

    def run_batched(name, bf16=False):
        model, optimizer = batched[name], optimizers[name]
        batches = [batch_of(BATCH) for _ in range(steps)]
        start = time.perf_counter()
        for batch in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                if isinstance(model, BareLSTMLM):
                    loss = model.loss(batch)
                else:
                    inputs = {k: v for k, v in batch.items() if k != "fusion_embeds" or model.config.uses_fusion}
                    loss = model(**inputs).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        tokens = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
        return tokens / (time.perf_counter() - start)

    def run_original(name):
        model, optimizer = originals[name], optimizers[name]
        batches = [batch_of(1) for _ in range(sentences_per_round)]
        start = time.perf_counter()
        for batch in batches:
            ids = batch["input_ids"][0]
            model.loss(ids, batch["fusion_embeds"][0]).backward()
            optimizer.step()
            optimizer.zero_grad()
        tokens = sum(b["input_ids"].shape[1] - 1 for b in batches)
        return tokens / (time.perf_counter() - start)

    for name in batched:  # warm-up
        run_batched(name)
    candidates = {}
    if "fp32" in precisions:
        candidates.update({name: (lambda n=name: run_batched(n)) for name in batched})
    if "bf16" in precisions:  # bfloat16 autocast (TrainingArguments bf16=True)
        candidates.update({f"{name} bf16": (lambda n=name: run_batched(n, bf16=True)) for name in batched})
    candidates.update({name: (lambda n=name: run_original(n)) for name in originals})
    measured = {name: statistics.median(v) for name, v in interleaved(candidates, rounds).items()}
    result = {}
    for fusion in ("none", "concat", "init_hc"):
        original = measured[f"original {fusion}"]
        for precision, suffix in (("fp32", ""), ("bf16", " bf16")):
            if precision not in precisions:
                continue
            ours, bare = measured[fusion + suffix], measured["bare LSTM LM" + suffix]
            result[f"{fusion}_{precision}"] = {"tokens_per_s": ours, "bare_tokens_per_s": bare,
                                               "original_fp32_tokens_per_s": original, "vs_bare": ours / bare,
                                               "vs_original": ours / original}
    return result


# ---------------------------------------------------------------------------------------------------------- embed


def bench_embed(quick: bool, precisions: tuple[str, ...]) -> dict:
    from datasets import Dataset

    from fusion_lstm_data.embedder import PrefixEmbedder
    from fusion_lstm_training.embeddings import EmbeddingCache, SENTENCES_PER_MAP_BATCH, prefix_encoder_tokens
    from fusion_lstm_training.reference import naive_prefix_embeddings

    tokenizer = modeling_fusion_lstm.load_tokenizer()
    model = FusionLSTMForCausalLM.from_encoder_pretrained(fusion="concat", **SIZES).eval()
    count = 64 if quick else 192
    ids = [x + [tokenizer.eos_token_id] for x in tokenizer(first_sentences("validation.txt", count))["input_ids"]]
    embedder = PrefixEmbedder(model.prefix_encoder, tokenizer)
    bf16_embedder = PrefixEmbedder(model.prefix_encoder, tokenizer, autocast_dtype=torch.bfloat16)

    @torch.inference_mode()
    def per_prefix(chunk):
        naive_prefix_embeddings(model, chunk)

    # chunks as large as one datasets.map batch of the precompute; all three embed the same sentences, chunk by
    # chunk in turn (A B C A B C), so that the ratios compare like with like
    size = SENTENCES_PER_MAP_BATCH
    chunks = [ids[i : i + size] for i in range(0, len(ids), size)]
    methods = {"fp32": lambda c: embedder({"input_ids": c}), "bf16": lambda c: bf16_embedder({"input_ids": c}),
               "per prefix": per_prefix}
    methods = {name: run for name, run in methods.items() if name in (*precisions, "per prefix")}
    totals = {name: [0.0, []] for name in methods}
    for chunk in chunks:
        for name, run in methods.items():
            totals[name][0] += timed(run, chunk)
            totals[name][1] += chunk

    rates = {name: (len(done) / t, prefix_encoder_tokens(list(map(len, done))) / t)
             for name, (t, done) in totals.items()}
    ref_rate, ref_tok = rates["per prefix"]

    dataset = Dataset.from_dict({"input_ids": ids})
    with tempfile.TemporaryDirectory() as folder:
        cache = EmbeddingCache(embedder, folder)
        cache.store  # hashing the encoder's weights is once per run, not part of either timing
        first = timed(cache.attach, dataset, "bench")
        second = timed(cache.attach, dataset, "bench")
    result = {"per_prefix_sentences_per_s": ref_rate, "per_prefix_encoder_tokens_per_s": ref_tok,
              "first_run_s": first, "cached_run_s": second, "cached_fraction": second / first, "sentences": len(ids)}
    if "fp32" in rates:
        ours_rate, ours_tok = rates["fp32"]
        result.update({"ours_sentences_per_s": ours_rate, "ours_encoder_tokens_per_s": ours_tok,
                       "speedup": ours_tok / ref_tok})
    if "bf16" in rates:
        bf16_rate, bf16_tok = rates["bf16"]
        result.update({"bf16_sentences_per_s": bf16_rate, "bf16_speedup": bf16_tok / ref_tok})
    return result


# ----------------------------------------------------------------------------------------------------- precompute


class EncoderCounter:
    """Counts what the encoder computes while attached (a forward pre-hook) and `active` (several counters may watch
    one encoder): the real tokens of every window, for the FLOPs of the work, and the padded tokens, for the
    waste."""

    def __init__(self, encoder):
        self.windows, self.padded, self.active = [], 0, False
        self.handle = encoder.register_forward_pre_hook(self.count, with_kwargs=True)

    def count(self, module, args, kwargs):
        if not self.active:
            return
        mask = kwargs["attention_mask"]
        self.windows += mask.sum(1).tolist()
        self.padded += mask.numel()


def matmul_gflops(dtype: torch.dtype, shape: tuple[int, int, int] = (2048, 384, 1536), repeat: int = 20) -> float:
    """GFLOP/s of a plain matrix product (m × k) @ (k × n): by default at the encoder's shapes (2048 tokens,
    384 → 1536, its feed-forward)."""
    m, k, n = shape
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    torch.matmul(a, b)  # warm-up
    return 2 * m * k * n * repeat / timed(lambda: [torch.matmul(a, b) for _ in range(repeat)]) / 1e9


def bench_precompute(quick: bool, precisions: tuple[str, ...]) -> dict:
    """The prefix precompute as the cpu-scale runs do it (an 8192-token BPE: e_j from the text of each prefix, read
    by MiniLM's own tokenizer), on sentences of documents/train.txt: sentences/s, and the encoder's achieved GFLOP/s
    (encoder_flops of the real tokens) beside a plain matrix product's at the same precision, measured in turn.
    That ratio is the distance to the machine's limit."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    from fusion_lstm_data.embedder import PrefixEmbedder
    from fusion_lstm_training.data import tokenize_sentences
    from fusion_lstm_training.embeddings import SENTENCES_PER_MAP_BATCH, encoder_flops

    path = DOCUMENTS / "train.txt" if DOCUMENTS.exists() else ROOT / "data" / "wikitext2" / "train.txt"
    sentences = [line for line in read_sentences(str(path)) if line.strip()][: 64 if quick else 256]
    bpe = build_bpe_tokenizer(sentences, 2048)
    rows = tokenize_sentences(Dataset.from_dict({"text": sentences}), bpe, 64, "bench", keep_offsets=True)
    batch = {name: rows[name] for name in ("text", "input_ids", "offsets")}
    model = FusionLSTMForCausalLM.from_encoder_pretrained(fusion="concat", vocab_size=len(bpe), **SIZES).eval()
    encoder_tokenizer = AutoTokenizer.from_pretrained(modeling_fusion_lstm.default_encoder_path())
    dtypes = {"fp32": None, "bf16": torch.bfloat16}
    # each precision as the precompute runs it; bf16 also as it ran before the embedder kept bfloat16 linear weights
    # (autocast casting the frozen weights at every call): the same vectors, the difference is the speed-up
    variants = {precision: PrefixEmbedder(model.prefix_encoder, bpe, encoder_tokenizer, dtypes[precision])
                for precision in precisions}
    if "bf16" in precisions:
        variants[PRECOMPUTE_BEFORE] = PrefixEmbedder(model.prefix_encoder, bpe, encoder_tokenizer, torch.bfloat16,
                                                     encoder=model.prefix_encoder)
    chunks = [{k: v[i : i + SENTENCES_PER_MAP_BATCH] for k, v in batch.items()}
              for i in range(0, len(sentences), SENTENCES_PER_MAP_BATCH)]
    counters = {name: EncoderCounter(embedder.encoder.encoder) for name, embedder in variants.items()}
    seconds, matmul, square = ({name: [] for name in variants} for _ in range(3))
    for embedder in variants.values():  # warm-up, not counted
        embedder(chunks[0])
    for chunk in chunks:  # every variant on the chunk, each followed by the matrix products at its precision
        for name, embedder in variants.items():
            counters[name].active = True
            seconds[name].append(timed(embedder, chunk))
            counters[name].active = False
            dtype = embedder.autocast_dtype or torch.float32
            matmul[name].append(matmul_gflops(dtype))
            square[name].append(matmul_gflops(dtype, (2048, 2048, 2048), repeat=2))
    result = {}
    for name, counter in counters.items():
        counter.handle.remove()
        total = sum(seconds[name])
        achieved = encoder_flops(counter.windows, model.config.encoder) / total / 1e9
        reference, peak = statistics.median(matmul[name]), statistics.median(square[name])
        result[name] = {"sentences_per_s": len(sentences) / total, "encoder_gflops_per_s": achieved,
                        "matmul_gflops_per_s": reference, "fraction_of_matmul": achieved / reference,
                        "square_matmul_gflops_per_s": peak, "fraction_of_square_matmul": achieved / peak,
                        "padding_fraction": 1 - sum(counter.windows) / counter.padded,
                        "encoder_tokens": sum(counter.windows), "sentences": len(sentences),
                        "file": f"{path.parent.name}/{path.name}"}
    if PRECOMPUTE_BEFORE in result:
        result["bf16_speedup_over_before"] = (result["bf16"]["sentences_per_s"]
                                              / result[PRECOMPUTE_BEFORE]["sentences_per_s"])
    return result


# ------------------------------------------------------------------------------------------------------- generate


def bench_generate(quick: bool) -> dict:
    tokenizer = modeling_fusion_lstm.load_tokenizer()
    prompt = tokenizer(["The game was"], return_tensors="pt")
    lengths = (16, 64, 256)
    result = {}
    for fusion in ("none", "concat"):
        torch.manual_seed(0)
        model = FusionLSTMForCausalLM.from_encoder_pretrained(fusion=fusion, **SIZES).eval()

        def per_token(n, use_cache):
            start = time.perf_counter()
            with torch.inference_mode():
                model.generate(**prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=use_cache,
                               eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
            return (time.perf_counter() - start) / n

        per_token(4, True)  # warm-up
        for n in lengths:
            # a full forward per token with fusion re-embeds every prefix: cubic, so only at the short length
            uncached_ok = not FusionLSTMConfig(fusion=fusion).uses_fusion or n == 16
            runs = {"cached": lambda n=n: per_token(n, True)}
            if uncached_ok:
                runs["uncached"] = lambda n=n: per_token(n, False)
            measured = {k: min(v) for k, v in interleaved(runs, 1 if quick else 2).items()}
            result[f"{fusion}_{n}"] = {"cached_ms_per_token": measured["cached"] * 1e3,
                                       # null where the full forward per token was skipped (too slow to run)
                                       "uncached_ms_per_token": measured["uncached"] * 1e3 if uncached_ok else None}
        result[f"{fusion}_flatness_256_vs_16"] = (result[f"{fusion}_256"]["cached_ms_per_token"]
                                                  / result[f"{fusion}_16"]["cached_ms_per_token"])
    return result


# --------------------------------------------------------------------------------------------------------- memory


def bench_memory(quick: bool) -> dict:
    sizes = (1000, 10000)
    result = {}
    for n in sizes:
        out = subprocess.run([sys.executable, str(ROOT / "bench" / "memory_worker.py"), str(n),
                              "--steps", "12" if quick else "60"], capture_output=True, text=True, check=True)
        result[str(n)] = json.loads(out.stdout.strip().splitlines()[-1])
    result["anon_growth"] = result[str(sizes[1])]["peak_anon_mb"] / result[str(sizes[0])]["peak_anon_mb"]
    return result


# ---------------------------------------------------------------------------------------------------------- loader


def bench_loader(quick: bool) -> dict:
    """What the Trainer's data loader pays per batch to read fusion_embeds from the Arrow cache and collate them: as
    Python lists (the datasets default) vs as arrays (run_clm's format), on batches of the bench's size."""
    import numpy as np
    from datasets import Array2D, Dataset, Features, Sequence, Value

    rng = np.random.default_rng(0)
    rows, length = BATCH * 8, 30  # a typical Wikipedia sentence in the 8192 BPE
    features = Features({"input_ids": Sequence(Value("int64")),
                         "fusion_embeds": Array2D(shape=(None, FUSION_WIDTH), dtype="float16")})
    data = Dataset.from_dict({"input_ids": [list(range(length))] * rows,
                              "fusion_embeds": [rng.standard_normal((length, FUSION_WIDTH), dtype=np.float32)
                                                .astype(np.float16) for _ in range(rows)]}, features=features)
    arrays = data.with_format("numpy", columns=["fusion_embeds"], output_all_columns=True)
    collate = FusionDataCollator(pad_token_id=0)

    def batches(dataset):
        def run():
            started = time.perf_counter()
            for start in range(0, rows, BATCH):
                collate(dataset.__getitems__(list(range(start, start + BATCH))))
            return (time.perf_counter() - started) / (rows // BATCH)
        return run

    times = interleaved({"lists": batches(data), "arrays": batches(arrays)}, rounds=3 if quick else 10)
    ms = {name: 1000 * min(values) for name, values in times.items()}
    return {"ms_per_batch": ms, "speedup": ms["lists"] / ms["arrays"], "batch": BATCH, "tokens": length,
            "width": FUSION_WIDTH}


# ------------------------------------------------------------------------------------------------------- context


def bench_context(quick: bool) -> dict:
    """The cost of the document's context in training: concat reading 3 previous sentences through the encoder
    (fusion_context previous; its e_j precomputed, random here) against concat sentence by sentence, on the same
    sentences in the same length-grouped batches, as run_clm's data layer and collator build them. Scored tokens
    per second: the context's tokens are conditioned on, never scored."""
    from fusion_lstm_training.data import sentence_dataset, tokenize_sentences, with_context

    path = DOCUMENTS / "train.txt"
    raw = sentence_dataset(str(path), context_sentences=3).select(range(1024))
    tokenizer = build_bpe_tokenizer(raw["text"], VOCAB)
    sentence_rows = tokenize_sentences(raw, tokenizer, 64, "bench", keep_offsets=False)
    context_rows = with_context(sentence_rows, tokenizer, 128, "bench")
    generator = torch.Generator().manual_seed(0)
    collator = FusionDataCollator(pad_token_id=tokenizer.pad_token_id)
    by_length = sorted(range(len(sentence_rows)), key=lambda i: len(sentence_rows[i]["input_ids"]))

    def features(rows, indices):
        keep = [c for c in rows.column_names if c not in ("text", "document", "context")]
        out = []
        for i in indices:
            row = {c: rows[i][c] for c in keep}
            row["fusion_embeds"] = torch.randn(len(row["input_ids"]), FUSION_WIDTH, generator=generator)
            out.append(row)
        return out

    torch.manual_seed(0)
    models = {}
    for name, fields in (("sentence", {}), ("previous K=3", {"fusion_context": "previous", "context_sentences": 3})):
        config = FusionLSTMConfig(vocab_size=VOCAB, fusion="concat", fusion_embedding_size=FUSION_WIDTH,
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id, **SIZES, **fields)
        models[name] = FusionLSTMForCausalLM(config).train()
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=1e-5) for name, m in models.items()}
    steps, rounds = (2, 2) if quick else (5, 5)
    starts = [[int(torch.randint(len(by_length) - BATCH + 1, (1,), generator=generator)) for _ in range(steps)]
              for _ in range(rounds + 1)]
    rows_of = {"sentence": sentence_rows, "previous K=3": context_rows}
    round_of = {name: iter(starts) for name in models}

    def run(name):
        model, optimizer = models[name], optimizers[name]
        batches = [collator(features(rows_of[name], by_length[s : s + BATCH])) for s in next(round_of[name])]
        started = time.perf_counter()
        for batch in batches:
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        scored = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
        return scored / (time.perf_counter() - started)

    for name in models:  # warm-up, on the first round's batches
        run(name)
    measured = {name: statistics.median(v) for name, v in interleaved({n: (lambda n=n: run(n)) for n in models},
                                                                         rounds).items()}
    ratio = measured["previous K=3"] / measured["sentence"]
    context_tokens = sum(len(ids) for ids in context_rows["context_input_ids"])
    return {"scored_tokens_per_s": measured, "vs_sentence": ratio,
            "context_tokens_per_sentence": context_tokens / len(sentence_rows), "batch": BATCH}


SECTIONS = ("train", "embed", "precompute", "generate", "memory", "loader", "context")


def check_output(parser, output: Path):
    """The results file must be JSON, and an existing one must parse (a partial rerun merges into it); its folder is
    created."""
    if output.suffix != ".json" or output.is_dir():
        parser.error(f"--output {output}: the results are a .json file.")
    if output.exists():
        try:
            json.loads(output.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            parser.error(f"--output {output} exists and is not valid JSON ({error}): move it away or choose another "
                         "file.")
    output.parent.mkdir(parents=True, exist_ok=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--output", default=None, help="a .json file (default: bench/results/{quick,full}.json)")
    parser.add_argument("--precision", default="both", choices=("both", *PRECISIONS),
                        help="train and embed in fp32 and bf16 (both), one of them, or the one auto picks here")
    args = parser.parse_args()
    output = Path(args.output or ROOT / "bench" / "results" / f"{'quick' if args.quick else 'full'}.json")
    check_output(parser, output)  # before minutes of benchmarking, not after
    torch.manual_seed(0)
    started = time.perf_counter()
    precisions = ("fp32", "bf16") if args.precision == "both" else (choose_precision(args.precision),)
    print(f"precision {args.precision}: measuring {', '.join(precisions)} on {cpu_text(cpu_description())}")
    sections = {"train": lambda quick: bench_train(quick, precisions),
                "embed": lambda quick: bench_embed(quick, precisions),
                "precompute": lambda quick: bench_precompute(quick, precisions), "generate": bench_generate,
                "memory": bench_memory, "loader": bench_loader, "context": bench_context}
    results = {}
    for name in args.sections:  # each section's table as bench/README.md shows it, as soon as it is measured
        results[name] = sections[name](args.quick)
        print("\n" + "\n".join(section_table(name, results[name])), flush=True)
    seconds = time.perf_counter() - started
    results["meta"] = {"quick": args.quick, "seconds": seconds, "precisions": precisions, "date": time.strftime("%Y-%m-%d"),
                       "machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "torch": torch.__version__,
                       "device": "cpu", "cpu": cpu_description()}
    for name in args.sections:  # every section says what it ran on: the CPU, its vector flags, any cap on them
        results[name] = {**results[name], "meta": results["meta"]}
    if output.exists() and set(args.sections) != set(sections):
        # a partial rerun replaces its sections and keeps the others, each with the meta of its own run
        previous = json.loads(output.read_text())
        previous.update({name: results[name] for name in args.sections})
        results = previous
    output.write_text(json.dumps(results, indent=2, default=str, allow_nan=False))  # valid JSON: no NaN
    print(f"\n{seconds:.0f} s; wrote {output}")


if __name__ == "__main__":
    main()
