import os
import sys
from pathlib import Path

# aiortc (pylibsrtp) must load before TensorFlow: the reverse order crashes the process.
import aiortc  # noqa: F401, I001
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers import FakeClassifier, make_tiny_model_dir  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def fake_classifier() -> FakeClassifier:
    return FakeClassifier()
