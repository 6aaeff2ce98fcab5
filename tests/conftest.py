import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for tests/tiny.py


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """One cache (tokenizer, tiny teacher, tiny base student) shared by the session's tests."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tokenizer(tiny_cache):
    """The default tokenizer, trained once per session in the shared cache."""
    from study.config import TokenizerConfig
    from study.models import get_tokenizer

    return get_tokenizer(TokenizerConfig(), tiny_cache)[0]


@pytest.fixture(scope="session")
def fixture_records_dir(tmp_path_factory):
    """The fixture record set (tests/fixture_records.py) written once; tests only read it."""
    from fixture_records import write_fixture_records

    folder = tmp_path_factory.mktemp("fixture_records")
    write_fixture_records(folder)
    return folder
