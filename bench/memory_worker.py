"""Peak memory of a short training run on N sentences whose float16 prefix embeddings sit in the memory-mapped
Arrow cache (the run_clm path: EmbeddingCache → FusionDataCollator → Trainer). Prints one JSON line.

    python bench/memory_worker.py 10000 --steps 20

The vectors are random (the encoder's speed is measured elsewhere); the storage, loading and training are real.
"""

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WIDTH = 384  # MiniLM


def memory_mb() -> dict[str, float]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


class PeakSampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.peak_rss = self.peak_anon = 0.0
        self.running = True

    def run(self):
        while self.running:
            m = memory_mb()
            self.peak_rss, self.peak_anon = max(self.peak_rss, m["VmRSS"]), max(self.peak_anon, m["RssAnon"])
            time.sleep(0.02)


class RandomEmbedder:
    """Stands in for PrefixEmbedder (the same interface): one float16 vector per token, deterministic per sentence."""

    width = WIDTH

    def fingerprint(self) -> str:
        return "random-vectors"

    def __call__(self, batch):
        rng = np.random.default_rng(len(batch["input_ids"][0]))
        return {"fusion_embeds": [rng.standard_normal((len(ids), WIDTH)).astype(np.float16)
                                  for ids in batch["input_ids"]]}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sentences", type=int)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    import torch
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    from fusion_lstm_data.batches import FusionDataCollator
    from fusion_lstm_training.embeddings import EmbeddingCache
    from modeling_fusion_lstm import FusionLSTMConfig, FusionLSTMForCausalLM

    hf_logging.set_verbosity_error()
    rng = np.random.default_rng(0)
    ids = [[101, *rng.integers(1000, 30000, size=int(n)).tolist(), 102] for n in rng.integers(18, 40, args.sentences)]
    with tempfile.TemporaryDirectory() as tmp:
        config = FusionLSTMConfig(fusion="concat", fusion_embedding_size=WIDTH, embedding_size=128, hidden_size=256,
                                  projection_size=128, bos_token_id=101, eos_token_id=102, pad_token_id=0)
        data = EmbeddingCache(RandomEmbedder(), tmp).attach(Dataset.from_dict({"input_ids": ids}), "train")
        cache_mb = sum(f.stat().st_size for f in Path(tmp).rglob("*.arrow")) / 2**20
        torch.manual_seed(0)
        model = FusionLSTMForCausalLM(config)
        training_args = TrainingArguments(output_dir=tmp, max_steps=args.steps, per_device_train_batch_size=32,
                                          report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True,
                                          logging_strategy="no")
        sampler = PeakSampler()
        sampler.start()
        Trainer(model=model, args=training_args, train_dataset=data,
                data_collator=FusionDataCollator(pad_token_id=0)).train()
        sampler.running = False
        sampler.join()
    print(json.dumps({"sentences": args.sentences, "peak_rss_mb": sampler.peak_rss,
                      "peak_anon_mb": sampler.peak_anon, "cache_mb": cache_mb}))


if __name__ == "__main__":
    main()
