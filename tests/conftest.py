import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# Tests import their shared helpers as `from common import ...`.
sys.path.insert(0, HERE)
# ... and the references (test oracles, published baselines) from the
# repository's references/ folder, which is not installed with pyreid.
# Appended, not inserted: an installed pyreid keeps precedence over the
# source folder next to references/.
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.append(ROOT)


import pytest  # noqa: E402


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty torch home and a network that fails every download; returns the list of attempted URLs."""
    import urllib.error

    import torch
    import torchvision.models._api as api

    attempts = []

    def no_network(url, *args, **kwargs):
        attempts.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(api, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    return attempts
