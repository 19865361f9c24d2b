import pathlib

import pytest
from ansible_collections.followme.asterisk.plugins.plugin_utils.declarations import Checker, load_schema

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Each test its own cache directory (the duplicate-key answers of plugin_utils/variables.py)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def schema():
    return load_schema(str(ROOT / "schemas" / "followme.schema.json"))


@pytest.fixture(scope="session")
def checker(schema):
    return Checker(schema)


@pytest.fixture
def check(checker):
    """check(followme=..., **policy) -> (declarations, [error strings]) for host pbx1."""

    def run(followme=None, **variables):
        if followme is not None:
            variables["followme"] = followme
        declarations, errors = checker.check_host("pbx1", variables)
        return declarations, [str(error) for error in errors]

    return run
