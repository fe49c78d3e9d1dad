"""The README's usage snippet is executed as written, and its two commands are the ones CI relies on."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_usage_snippet_runs(tmp_path, monkeypatch):
    text = README.read_text()
    usage = text.split("## Usage", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", usage, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(snippet, "README.md:usage", "exec"), namespace)
    assert namespace["out"].logits.shape[-1] == 30522
    assert namespace["generated"].shape[1] > namespace["batch"]["input_ids"].shape[1]


def test_readme_starts_with_the_two_commands():
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)[:2]
    assert blocks[0].startswith("pip install torch==2.13.0") and "reproduce.py demo" in blocks[0]
    assert blocks[1].startswith("pip install torch==2.13.0") and "pytest" in blocks[1]
