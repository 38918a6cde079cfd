"""Publish rate limits that fit a LAN hub (issue 11): ntfy's visitor token bucket, keyed by
client address for anonymous clients and by token for authenticated ones, loopback exempt
by default (``[limits] exempt_hosts``, ntfy's ``visitor-request-limit-exempt-hosts``), and a
429 that says when to come back (``Retry-After``)."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from agent.errors import ConfigError
from edge_relay import config
from edge_relay.config import Limits
from edge_relay.core import ExemptHosts, TokenBucket, rate_key
from tests.helpers import child_env, wait_for
from tests.relay import Relay
from tests.relay_proc import AgentProc


def test_one_message_a_second_for_90_s_passes_with_the_default_limits() -> None:
    lim = Limits()
    bucket = TokenBucket(lim.publish_burst, lim.publish_rate)
    allowed = [bucket.take("ip:192.168.1.20", now=float(t)) for t in range(90)]
    assert allowed == [True] * 90
    # ...and a burst of the configured size still passes at once, one more is refused
    burst = TokenBucket(lim.publish_burst, lim.publish_rate)
    assert sum(burst.take("c", now=0.0) for _ in range(lim.publish_burst + 1)) == 60


def test_wait_says_how_long_until_a_token() -> None:
    b = TokenBucket(2, 0.5)  # one token per 2 s
    assert [b.wait("c", now=0.0) for _ in range(2)] == [0.0, 0.0]
    assert b.wait("c", now=0.0) == pytest.approx(2.0)
    assert b.wait("c", now=1.5) == pytest.approx(0.5)  # a refusal spends nothing
    assert b.wait("c", now=2.0) == 0.0
    assert b.take("c", now=2.0) is False


def test_bucket_map_is_bounded() -> None:
    b = TokenBucket(5, 0.001, max_clients=1000)
    for i in range(20_000):  # distinct addresses, none refilled: nothing is "full"
        assert b.take(f"ip:10.{i // 65536}.{i // 256 % 256}.{i % 256}", now=float(i) / 1e4)
    assert len(b) <= 1000
    full = TokenBucket(5, 1000.0, max_clients=1000)
    for i in range(1001):
        full.take(f"c{i}", now=float(i))  # past the bound: every refilled bucket is forgotten
    assert len(full) == 1  # only the newest, which has spent a token


def test_rate_key_by_token_or_address() -> None:
    assert rate_key("192.168.1.5", None) == "ip:192.168.1.5"
    assert rate_key("192.168.1.5", "sensor") == "token:sensor"
    assert rate_key("::ffff:192.168.1.5", None) == "ip:192.168.1.5"  # v4-mapped is the v4 host
    # IPv6: one /64 is one visitor (ntfy's visitor-prefix-bits-ipv6 default)
    assert rate_key("2001:db8:1:2::5", None) == rate_key("2001:db8:1:2:ffff::9", None)
    assert rate_key("2001:db8:1:2::5", None) != rate_key("2001:db8:1:3::5", None)
    assert rate_key("not an address", None) == "ip:not an address"


def test_exempt_hosts_ips_and_cidrs() -> None:
    ex = ExemptHosts.parse(["10.0.0.0/8", "192.168.1.7", "::1", "fd00::/8", "nas.local"])
    assert ex.hostnames == ("nas.local",)
    for addr in ("10.1.2.3", "192.168.1.7", "::1", "fd12::3", "::ffff:10.9.9.9"):
        assert ex.contains(addr), addr
    for addr in ("11.0.0.1", "192.168.1.8", "::2", "fe80::1", "garbage", ""):
        assert not ex.contains(addr), addr
    assert ExemptHosts.parse(["10.1.2.3/8"]).contains("10.200.0.1")  # host bits masked, as ntfy
    default = ExemptHosts.parse(Limits().exempt_hosts)
    assert default.contains("127.0.0.1") and default.contains("127.3.4.5")
    assert default.contains("::1") and not default.contains("192.168.1.2")
    assert ex.resolved({"nas.local": ["192.168.1.50"]}).contains("192.168.1.50")


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "300.1.1.1", "bad host!", "-x", "", "fd00::/129"])
def test_a_bad_exempt_host_is_a_config_error_naming_it(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(f"[limits]\nexempt_hosts = [{json.dumps(bad)}]\n")
    with pytest.raises(ConfigError) as info:
        config.load({}, config_file=path, env={})
    text = str(info.value)
    assert text.startswith(str(path)) and "limits.exempt_hosts" in text and repr(bad) in text


def _publish(
    url: str, topic: str, text: str, token: str | None = None, source: str = "127.0.0.1"
) -> tuple[int, dict[str, str], dict[str, object]]:
    """One PUT from the local address ``source`` (any of 127/8 reaches a loopback listener,
    so one machine can be several LAN clients)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    port = int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15, source_address=(source, 0))
    try:
        conn.request("PUT", f"/{topic}", body=text.encode(), headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.headers), json.loads(resp.read())
    finally:
        conn.close()


TINY = """[limits]
publish_burst = 3
publish_rate = 0.5
exempt_hosts = []
"""


def test_429_has_retry_after_and_ntfys_error_then_passes_after_it(tmp_path: Path) -> None:
    relay = Relay(tmp_path, config=TINY).start()
    try:
        assert [_publish(relay.url, "lim", f"m{i}")[0] for i in range(3)] == [200] * 3
        status, headers, body = _publish(relay.url, "lim", "over")
        assert status == 429
        assert body["code"] == 42901 and body["http"] == 429
        assert body["link"] == "https://ntfy.sh/docs/publish/#limitations"
        wait = int(headers["Retry-After"])
        assert 1 <= wait <= 2  # one token per 2 s, some of it already refilled
        # the JSON publish to / and a poll request count against the same bucket
        port = int(relay.url.rsplit(":", 1)[1])
        for path, body, extra in (("/", b'{"topic":"lim","message":"j"}', {}),
                                  ("/lim", b"", {"X-Poll-ID": "p1"})):  # fmt: skip
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
            conn.request("POST", path, body=body, headers=extra)
            resp = conn.getresponse()
            assert resp.status == 429 and json.loads(resp.read())["code"] == 42901, path
            assert 1 <= int(resp.headers["Retry-After"]) <= 2
            conn.close()
        time.sleep(wait)
        assert _publish(relay.url, "lim", "after")[0] == 200
        assert [m["message"] for m in relay.poll("lim")] == ["m0", "m1", "m2", "after"]
    finally:
        assert relay.stop() == 0


def test_sustained_rate_below_the_limit_is_never_refused(tmp_path: Path) -> None:
    # the LAN case at a faster clock: 5 msg/s against burst 2, 10 tokens/s, for 40 messages
    relay = Relay(tmp_path, config="[limits]\npublish_burst = 2\npublish_rate = 10.0\n"
                  "exempt_hosts = []\n").start()  # fmt: skip
    try:
        codes = []
        for i in range(40):
            codes.append(_publish(relay.url, "steady", f"m{i}")[0])
            time.sleep(0.2)  # a stalled test only gives the bucket more time to refill
        assert codes == [200] * 40
    finally:
        assert relay.stop() == 0


def test_loopback_is_exempt_by_default(tmp_path: Path) -> None:
    relay = Relay(tmp_path, config="[limits]\npublish_burst = 2\npublish_rate = 0.01\n").start()
    try:
        assert [_publish(relay.url, "local", f"m{i}")[0] for i in range(20)] == [200] * 20
    finally:
        assert relay.stop() == 0


def _token(af: Path, name: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "edge_relay", "token", "--auth-file", str(af), "add", name,
         "--write", "*", "--read", "*"],
        env=child_env(), capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def test_buckets_are_per_token_for_authenticated_clients(tmp_path: Path) -> None:
    af = tmp_path / "auth.json"
    a, b = _token(af, "sensor_a"), _token(af, "sensor_b")
    anon = ["token", "--auth-file", str(af), "anonymous", "--write", "*"]
    subprocess.run([sys.executable, "-m", "edge_relay", *anon], env=child_env(), check=True,
                   timeout=30)  # fmt: skip
    relay = Relay(tmp_path / "r", config="[limits]\npublish_burst = 2\npublish_rate = 0.01\n"
                  "exempt_hosts = []\n", args=["--auth-file", str(af)]).start()  # fmt: skip
    try:
        # one address, three visitors: token a, token b, and the anonymous address
        assert [_publish(relay.url, "t", "a", a)[0] for _ in range(3)] == [200, 200, 429]
        assert [_publish(relay.url, "t", "b", b)[0] for _ in range(3)] == [200, 200, 429]
        assert [_publish(relay.url, "t", "anon")[0] for _ in range(3)] == [200, 200, 429]
        # another address: its own anonymous bucket, but token a's bucket is the same one
        assert [_publish(relay.url, "t", "anon", source="127.0.0.2")[0] for _ in range(3)] == [
            200, 200, 429]  # fmt: skip
        assert _publish(relay.url, "t", "a", a, source="127.0.0.2")[0] == 429
    finally:
        assert relay.stop() == 0


def _rejected(relay: Relay) -> float:
    with urllib.request.urlopen(relay.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    [line] = [ln for ln in text.splitlines() if ln.startswith("edge_relay_rejected_requests_total")]
    return float(line.split()[1])


def test_agent_outbox_posts_wait_for_retry_after(tmp_path: Path) -> None:
    """The agent's own HTTP publishes (outbox items, POST /) honour a 429's Retry-After:
    one refusal, then nothing until it has passed, instead of a retry at every 2 s wake-up."""
    from agent.store import Store

    relay = Relay(tmp_path / "r", config="[limits]\npublish_burst = 1\npublish_rate = 0.2\n"
                  "exempt_hosts = []\n").start()  # fmt: skip
    home = tmp_path / "agent"
    store = Store(home / "data" / "pushagent.db").open()
    for text in ("one", "two"):
        store.outbox_add("message", "fwd", json.dumps({"message": text}))
    store.close()
    agent = AgentProc(home, ["--server", relay.url, "--topic", "fwdsub"])
    try:
        agent.start()
        start = time.monotonic()
        wait_for(lambda: len(relay.poll("fwd")) == 2, timeout=60, what=agent.stderr())
        elapsed = time.monotonic() - start
        first, second = relay.poll("fwd")
        assert second["time"] - first["time"] >= 4  # Retry-After was 5 s (one token per 5 s)
        assert _rejected(relay) == 1  # one 429, no retry before its Retry-After
        assert elapsed >= 4.5
        store = Store(home / "data" / "pushagent.db").open()
        wait_for(lambda: store.outbox_len() == 0, timeout=10, what="outbox drained")
        store.close()
    finally:
        agent.stop()
        assert relay.stop() == 0
