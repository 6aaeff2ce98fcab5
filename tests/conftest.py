import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for tests/tiny.py


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """One cache (tokenizer, tiny teacher, tiny base student) shared by the session's tests."""
    return tmp_path_factory.mktemp("cache")
