"""``GET /file/`` with a ``Range`` the relay answers itself (``edge_relay.files``: the 416 in
ntfy's JSON shape), against a real relay process: it must answer as aiohttp's
``FileResponse`` would have in every other respect. A file gone from disk is a 404, never a
500 with a traceback; conditional headers are judged before the range, as RFC 9110 13.2.2
orders them (a cache revalidating its copy gets 304 or 412, not 416).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.relay import Relay, module_relay
from tests.test_relay_attachments import files_of, get, mp4, topic


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    yield from module_relay(tmp_path_factory, "relay")


def _upload(relay: Relay) -> tuple[str, str]:
    t = topic()
    status, msg = relay.request("PUT", f"/{t}", mp4(1000), {"Filename": "clip.mp4"})
    assert status == 200, msg
    return str(msg["attachment"]["url"]), str(msg["id"])


@pytest.mark.parametrize("rng", ["bytes=0-", "bytes=5000-", "bytes=0-1,5-9"])
def test_a_range_on_a_file_gone_from_disk_is_a_404(relay: Relay, rng: str) -> None:
    url, mid = _upload(relay)
    (name,) = [n for n in files_of(relay) if n.startswith(mid)]
    (relay.dir / "data" / "attachments" / name).unlink()  # an operator's clean-up, a sweep
    assert get(url)[0] == 404  # as without a Range
    status, _, body = get(url, {"Range": rng})
    assert status == 404, body
    assert relay.request("GET", "/v1/health")[0] == 200


@pytest.mark.parametrize("rng", ["bytes=5000-", "bytes=0-1,5-9"])
def test_preconditions_come_before_the_range(relay: Relay, rng: str) -> None:
    url, _ = _upload(relay)
    etag = get(url)[1]["Etag"]
    assert get(url, {"Range": rng, "If-None-Match": etag})[0] == 304
    assert get(url, {"Range": rng, "If-Match": '"other"'})[0] == 412
    assert get(url, {"Range": rng, "If-None-Match": '"other"'})[0] == 416  # then the range
