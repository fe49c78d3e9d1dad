#!/usr/bin/env python
"""Per-word surprisal from a causal LM, and optionally how well it predicts human reading times.

    python run_surprisal.py --model_name_or_path results/cpu/fusion_table/runs/concat_seed0 \
        --input_file sentences.txt --output_file surprisal.tsv
    python run_surprisal.py --model_name_or_path MODEL \
        --input_file ../shared/data/natural_stories/word_reading_times.tsv --output_file ns.tsv \
        --reading_times ../shared/data/natural_stories/word_reading_times.tsv

The input is a text file (one sentence a line) or a TSV with a word column (sentences by --sentence_column, else
ending at a word that ends in "." or "?"). The output TSV has one row per input word, in order: sentence,
word_index, word, surprisal (bits), tokens. With --reading_times, `<output>.reading_times.json` (Pearson r,
Spearman rho, ΔLL) and `<output>.reading_times.png` are written beside it. Works with this project's models and any
transformers causal LM with a fast tokenizer. The script is a shell: its code is fusion_lstm_surprisal/score.py
(`main(argv)`, importable).
"""

from fusion_lstm_surprisal.score import main


if __name__ == "__main__":
    main()
