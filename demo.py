"""Quick start on the embedded defaults: a concat-fusion LSTM LM around the packaged MiniLM encoder, a few
optimisation steps on WikiText-2 validation sentences, then save → reload with AutoModelForCausalLM → generate.

Until run_clm.py (training through the HF Trainer) lands, this is the README's main job.
"""

import argparse
import logging
import math
import tempfile
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

import modeling_fusion_lstm
from modeling_fusion_lstm import FusionLSTMForCausalLM


logger = logging.getLogger("demo")
SHARED_SENTENCES = Path(__file__).resolve().parent.parent / "shared" / "data" / "wikipedia" / "validation.txt"
FALLBACK_SENTENCES = [
    "The game was released in Japan in 2011.",
    "The river flows north through the valley before it reaches the sea.",
    "He was appointed to the position in 1998 and held it for ten years.",
]


def read_sentences(path: Path, limit: int) -> list[str]:
    if not path.is_file():
        logger.warning("%s not found: using %d built-in sentences", path, len(FALLBACK_SENTENCES))
        return FALLBACK_SENTENCES
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line][:limit]


def batches(tokenizer, sentences, batch_size):
    for start in range(0, len(sentences), batch_size):
        texts = [s + tokenizer.eos_token for s in sentences[start : start + batch_size]]  # BOS … EOS
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        yield batch


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fusion", default="concat")
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--output_dir", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.manual_seed(0)

    tokenizer = modeling_fusion_lstm.load_tokenizer()
    model = FusionLSTMForCausalLM.from_encoder_pretrained(
        fusion=args.fusion, embedding_size=128, hidden_size=256, projection_size=128
    )
    sentences = read_sentences(SHARED_SENTENCES, args.sentences)
    held_out, train = sentences[:32], sentences[32:]
    logger.info("fusion=%s, %d training and %d held-out sentences", args.fusion, len(train), len(held_out))

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for epoch in range(args.epochs):
        for batch in tqdm(list(batches(tokenizer, train, 32)), desc=f"epoch {epoch + 1}"):
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        losses = [(model(**b).loss.item(), int((b["labels"][:, 1:] != -100).sum())) for b in batches(tokenizer, held_out, 32)]
    nll = sum(loss * n for loss, n in losses) / sum(n for _, n in losses)
    print(f"held-out perplexity: {math.exp(nll):.1f}")

    output_dir = Path(args.output_dir or tempfile.mkdtemp(prefix="fusion-lstm-demo-"))
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    reloaded = AutoModelForCausalLM.from_pretrained(output_dir, trust_remote_code=True)
    reloaded_tokenizer = AutoTokenizer.from_pretrained(output_dir, trust_remote_code=True)
    prompt = reloaded_tokenizer(["The game was"], return_tensors="pt")
    generated = reloaded.generate(**prompt, max_new_tokens=15, do_sample=False)
    print(f"saved to {output_dir}")
    print("generated:", reloaded_tokenizer.decode(generated[0], skip_special_tokens=True))


if __name__ == "__main__":
    main()
