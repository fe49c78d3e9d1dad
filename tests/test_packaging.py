"""A non-editable install (`pip install .`) carries what the installed packages load: the evaluate modules, the
Hub server and the model-card template. Built as a wheel and imported from it, outside the clone."""

import subprocess
import sys
import textwrap
import zipfile

from helpers import ROOT


CLIENT = textwrap.dedent(
    """
    import sys
    import fusion_lstm_training, hub, modeling_fusion_lstm
    for module in (fusion_lstm_training, hub, modeling_fusion_lstm):
        assert module.__file__.startswith(sys.argv[1]), module.__file__  # the wheel's copy, not the clone's
    import numpy as np
    from transformers import EvalPrediction
    from fusion_lstm_training.metrics import LanguageModelMetrics
    from hub.card import TEMPLATE
    from hub.server import serve
    labels = np.array([[1, 2, 3]])
    nll = np.log(np.array([[4.0, 4.0]]))
    result = LanguageModelMetrics()(EvalPrediction(predictions=(np.array([[2, 0]]), nll), label_ids=labels))
    assert abs(result["perplexity"] - 4.0) < 1e-9 and result["accuracy"] == 0.5, result
    assert TEMPLATE.read_text().strip()
    print("OK")
    """
)


def test_a_built_wheel_works_outside_the_clone(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True, timeout=600)
    wheel = next((tmp_path / "dist").glob("fusion_lstm-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "fusion_lstm_training/evaluate_modules/perplexity/perplexity.py" in names
    assert "hub/model_card_template.md" in names and "hub/server.py" in names
    installed = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(installed)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(installed), "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", CLIENT, str(installed)], cwd=work, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr[-3000:]
