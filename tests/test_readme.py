"""The README's usage snippet and the docs' snippets are executed as written, the README's two commands are the ones
CI relies on, and the README stays a front page whose links lead somewhere."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


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


def test_the_readme_is_a_front_page_whose_local_links_exist():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    documents = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "hub" / "README.md"]
    for document in documents:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", document.read_text()):
            if not target.startswith("http"):
                assert (document.parent / target).exists(), (document.name, target)


def test_fuse_your_own_vectors_snippet_runs(tmp_path, monkeypatch):
    section = (ROOT / "docs" / "vectors.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(README.parent))  # examples/ as run_clm.py sees it
    namespace = {}
    exec(compile(snippet, "README.md:fuse-your-own-vectors", "exec"), namespace)
    collated, out = namespace["collated"], namespace["out"]
    assert collated["fusion_embeds"].shape == (*collated["input_ids"].shape, 3)
    assert out.logits.shape[:2] == collated["input_ids"].shape and out.loss is not None
    assert list((Path(namespace["cache"]) / "prefix-length-v1").glob("view-*.arrow"))
    assert not list(tmp_path.iterdir())  # nothing left in the folder it ran from
