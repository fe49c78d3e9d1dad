"""Forward time of one batch (32 sentences × 30 tokens) per fusion mode, paper-sized LSTM, real MiniLM encoder.

Prints a table and writes JSON. Modes are measured interleaved (A B C A B C …) so machine noise hits all alike;
the ratio column is each mode's median against `none` from the same run.

    python bench/forward.py [--repeats 5] [--output bench/results/forward.json]
"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import modeling_fusion_lstm
from modeling_fusion_lstm import FusionLSTMForCausalLM
from run import interleaved, timed  # bench/run.py, beside this file

from fusion_lstm_reproduction.speed import section_table


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fusions", nargs="+", default=["none", "concat", "init_hc"])
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default="bench/results/forward.json")
    args = parser.parse_args()

    torch.manual_seed(0)
    tokenizer = modeling_fusion_lstm.load_tokenizer()
    ids = torch.randint(1000, tokenizer.vocab_size, (args.batch_size, args.seq_len))
    ids[:, 0] = tokenizer.bos_token_id
    models = {f: FusionLSTMForCausalLM.from_encoder_pretrained(fusion=f).eval() for f in args.fusions}
    with torch.no_grad():
        for model in models.values():  # warm-up
            model(input_ids=ids, use_cache=False)
        runs = {f: (lambda m=m: timed(m, input_ids=ids, use_cache=False)) for f, m in models.items()}
        times = interleaved(runs, args.repeats)

    rows = []
    base = statistics.median(times[args.fusions[0]])
    for fusion in args.fusions:
        median = statistics.median(times[fusion])
        tokens_per_s = args.batch_size * args.seq_len / median
        rows.append({"fusion": fusion, "median_s": median, "min_s": min(times[fusion]),
                     "tokens_per_s": tokens_per_s, "time_vs_first": median / base})
    result = {
        "what": f"forward, no grad, batch {args.batch_size}x{args.seq_len}, paper-sized LSTM, MiniLM encoder",
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
    }
    print("\n".join(section_table("forward", result)))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
