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


def test_fuse_your_own_vectors_snippet_runs(tmp_path, monkeypatch):
    section = README.read_text().split("## Fuse your own vectors", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(README.parent))  # examples/ as run_clm.py sees it
    namespace = {}
    exec(compile(snippet, "README.md:fuse-your-own-vectors", "exec"), namespace)
    collated, out = namespace["collated"], namespace["out"]
    assert collated["fusion_embeds"].shape == (*collated["input_ids"].shape, 3)
    assert out.logits.shape[:2] == collated["input_ids"].shape and out.loss is not None
    assert list((tmp_path / "embedding-cache" / "prefix-length-v1").glob("view-*.arrow"))
