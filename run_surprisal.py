#!/usr/bin/env python
"""Per-word surprisal from causal LMs, and how well it predicts human reading times: `python run_surprisal.py --help`
shows the usage and examples. The script is a shell: its code is fusion_lstm_surprisal/score.py (`main(argv)`)."""

from fusion_lstm_data.cli import run_command
from fusion_lstm_surprisal.score import main


if __name__ == "__main__":
    run_command(main)
