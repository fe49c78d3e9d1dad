"""The benchmark's command line: bad sections and outputs are refused before any benchmarking (the benchmarks
themselves are timed runs, not tests: `python bench/run.py --quick`)."""

import subprocess
import sys

import pytest

from helpers import ROOT


def bench(*flags, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), *map(str, flags)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("flags, message", [
    (["--sections", "bogus"], "invalid choice: 'bogus' (choose from 'train', 'embed', 'precompute', 'generate', 'memory', 'loader', 'context')"),
    (["--output", "results.txt"], "--output results.txt: the results are a .json file"),
])
def test_bad_arguments_are_refused_before_benchmarking(flags, message):
    result = bench(*flags)
    assert result.returncode == 2 and message in result.stderr and "precision" not in result.stdout


def test_an_existing_output_that_is_not_json_is_refused(tmp_path):
    (tmp_path / "old.json").write_text("{truncated")
    result = bench("--output", tmp_path / "old.json")
    assert result.returncode == 2 and "exists and is not valid JSON" in result.stderr
    assert (tmp_path / "old.json").read_text() == "{truncated"
