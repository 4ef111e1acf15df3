"""``/docs`` and ``/redoc`` work on a rig PC without internet: every asset they load comes from
the daemon itself (a real uvicorn server), none from a CDN."""

import re
import uuid

import httpx
import pytest

from service.api.served import ServedDaemon
from tests.data.tiny_model import copy_tiny_model
from tests.service._loop_harness import loop_settings

pytestmark = pytest.mark.slow
_ASSET = re.compile(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs")
    _, window, step = copy_tiny_model(root / "model")
    settings = loop_settings(
        root, window, step, f"corticast-test-{uuid.uuid4().hex[:12]}", bridge={"dry_run": True}
    )
    with ServedDaemon(settings) as served:
        yield served


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_api_docs_load_every_asset_from_the_daemon_itself(served, page):
    with httpx.Client(base_url=served.url, timeout=30) as http:
        answer = http.get(page)
        assert answer.status_code == 200, answer.text
        assets = _ASSET.findall(answer.text)
        assert any(a.endswith(".js") for a in assets), assets  # the page does load a script
        for asset in assets:
            assert not re.match(r"^(https?:)?//", asset), f"{page} loads {asset} from another host"
            loaded = http.get(asset)
            assert loaded.status_code == 200, (asset, loaded.status_code)
            assert len(loaded.content) > 0
