#!/usr/bin/env python
"""Train a sentence-embedding fusion LSTM language model with the Hugging Face Trainer: `python run_clm.py --help`
shows the usage and examples. The script is a shell: its code is fusion_lstm_training/clm.py (`main(argv)`)."""

from fusion_lstm_data.cli import run_command
from fusion_lstm_training.clm import main


if __name__ == "__main__":
    run_command(main)
