#!/usr/bin/env python
"""Train a sentence-embedding fusion LSTM language model with the Hugging Face Trainer.

    python run_clm.py configuration/train/demo.json [--flag value …]   # flags after the file override it
    python run_clm.py --train_file train.txt --validation_file valid.txt --fusion concat --output_dir out --do_train --do_eval
    accelerate launch --config_file configuration/accelerate/cpu_ddp.yaml run_clm.py configuration/train/demo.json

Sentence-level as in the paper: every line is one sample, BOS … EOS. Prefix embeddings e_j are precomputed once
into a float16 Arrow cache (split between processes under a distributed launch) and fed as `fusion_embeds`. The
script is a shell: its code is fusion_lstm_training/clm.py (`main(argv)`, importable).
"""

from fusion_lstm_training.clm import main


if __name__ == "__main__":
    main()
