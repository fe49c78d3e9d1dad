"""Writes short_train.txt and short_validation.txt: the first 1,000 sentences of 6 to 16 tokens (the packaged MiniLM's
tokenizer, special tokens not counted) of the WikiText-2 raw validation articles, and the first 200 such sentences of
its test articles, from ../shared/data/wikipedia/ (run from the repository root). The encoder reads every prefix of a
sentence, so its cost grows with the square of the length: short sentences keep the demo's precompute to about a
minute and a half on a 2-core AVX2 CPU in float32."""

from pathlib import Path

import modeling_fusion_lstm

SHARED = Path("../shared/data/wikipedia")
HERE = Path(__file__).parent
LENGTHS = range(6, 17)


def short(path: Path, count: int, tokenizer) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [line for line in lines if len(tokenizer(line, add_special_tokens=False)["input_ids"]) in LENGTHS][:count]


if __name__ == "__main__":
    tokenizer = modeling_fusion_lstm.load_tokenizer(modeling_fusion_lstm.default_encoder_path())
    for name, source, count in (("short_train.txt", "validation.txt", 1000), ("short_validation.txt", "test.txt", 200)):
        (HERE / name).write_text("".join(line + "\n" for line in short(SHARED / source, count, tokenizer)),
                                 encoding="utf-8")
