"Shared test set-up: forward costs the tests measure are kept in a temporary folder, not in the user's cache"
import pytest


@pytest.fixture(autouse=True, scope="session")
def _forward_cost_cache(tmp_path_factory):
    "Point `$BTS_CACHE_DIR` at a folder of this test session (predict_volume measures and keeps forward costs there)"
    mp = pytest.MonkeyPatch()
    mp.setenv("BTS_CACHE_DIR", str(tmp_path_factory.mktemp("bts_cache")))
    yield
    mp.undo()
