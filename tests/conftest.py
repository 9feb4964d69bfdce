"""Shared fixtures: real pipelines, real files. Nothing here downloads."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# One torch thread per test process: the small models gain nothing from two on this 2-core
# machine, and kernels/servers started by tests inherit it (no oversubscription).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The weight-hash cache goes to a temporary folder, never the user's ~/.cache/sdwidgets.
os.environ["SDWIDGETS_CACHE"] = tempfile.mkdtemp(prefix="sdw-test-cache-")

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import sdwidgets as sdw  # noqa: E402
from sdwidgets.models import BUILTIN_MODELS  # noqa: E402

EMBEDDED_READY = (BUILTIN_MODELS["shapes"] / "model_index.json").is_file()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """Folder of a tiny random SD pipeline built from configs (a second, independent model)."""
    from tiny_model import build_tiny_pipeline

    return str(build_tiny_pipeline(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="session")
def model(tiny_model) -> str:
    """The model most tests run on: the embedded `shapes` model (the tiny one until it ships)."""
    return "shapes" if EMBEDDED_READY else tiny_model


@pytest.fixture
def session(tmp_path, model):
    """A fresh Session with its own log folder; it becomes the default session for the test."""
    s = sdw.Session(log_dir=tmp_path / "runs", model=model, progress=False)
    previous = sdw.set_session(s)
    yield s
    sdw.set_session(previous)


@pytest.fixture(scope="session")
def tiny_lora(tiny_model, tmp_path_factory) -> Path:
    from tiny_model import build_tiny_lora

    return build_tiny_lora(tiny_model, tmp_path_factory.mktemp("lora") / "tiny.safetensors")


@pytest.fixture(scope="session")
def tiny_controlnet(tiny_model, tmp_path_factory) -> str:
    from tiny_model import build_tiny_controlnet

    return str(build_tiny_controlnet(tiny_model, tmp_path_factory.mktemp("controlnet")))


@pytest.fixture
def tiny_session(tmp_path, tiny_model):
    """A Session on the tiny random model (for what must not depend on the embedded one)."""
    return sdw.Session(log_dir=tmp_path / "tiny-runs", model=tiny_model, progress=False)


def pixels(image):
    import numpy as np

    return np.asarray(image).astype(int)
