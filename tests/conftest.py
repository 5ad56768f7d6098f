import pytest


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """One data directory for the whole run, so generated datasets are cached once."""
    return tmp_path_factory.mktemp("data")
