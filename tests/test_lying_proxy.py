"""The lying proxy does each lie it promises (the issue 12 tests are only as good as it is).

Plain HTTP against the proxy in front of the session emulator; no mount.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from emulator_proc import EmulatorProcess
from lying_proxy import Answer, Drop, LyingProxy, Reply, Rewrite, Rule, ShortBody, Stall, Trickle

CONTENT = b"twenty bytes of text"


@pytest.fixture
def proxy(emulator: EmulatorProcess) -> Iterator[LyingProxy]:
    made = LyingProxy(emulator.root_url)
    yield made
    made.stop()


@pytest.fixture
def client(proxy: LyingProxy) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=proxy.base_url + "/", headers={"Authorization": "Bearer sk-test"}, timeout=10
    ) as made:
        yield made


@pytest.fixture
def stored(emulator: EmulatorProcess) -> tuple[str, str]:
    """A container with one file of CONTENT: (container id, file id)."""
    with httpx.Client(
        base_url=emulator.base_url + "/", headers={"Authorization": "Bearer sk-test"}
    ) as direct:
        made = direct.post("containers", json={"name": f"proxied-{uuid.uuid4().hex[:8]}"})
        cid: str = made.raise_for_status().json()["id"]
        fid: str = emulator.add_file(cid, "/mnt/data/f.txt", CONTENT)["id"]
    return cid, fid


def content_url(stored: tuple[str, str]) -> str:
    return "containers/{}/files/{}/content".format(*stored)


def test_requests_without_a_rule_pass_through_and_are_recorded(
    proxy: LyingProxy, client: httpx.Client, stored: tuple[str, str]
) -> None:
    upload = client.post(f"containers/{stored[0]}/files", files={"file": ("up.txt", b"uploaded\n")})
    assert upload.status_code == 200, upload.text
    assert client.get(content_url(stored)).content == CONTENT
    assert proxy.seen("GET", "/v1/" + content_url(stored))
    assert proxy.seen("POST", f"/v1/containers/{stored[0]}/files")


def test_rewrite_edits_the_json_answer(
    proxy: LyingProxy, client: httpx.Client, stored: tuple[str, str]
) -> None:
    def lie(page: Any) -> Any:
        return {**page, "data": [{**page["data"][0], "id": "..", "bytes": 1e30}]}

    proxy.add(Rule(rf"/containers/{stored[0]}/files$", Rewrite(lie), method="GET"))
    item = client.get(f"containers/{stored[0]}/files").json()["data"][0]
    assert (item["id"], item["bytes"]) == ("..", 1e30)


def test_answer_and_reply_replace_the_server_and_count_limits_a_rule(
    proxy: LyingProxy, client: httpx.Client, stored: tuple[str, str]
) -> None:
    proxy.add(Rule(re.escape(content_url(stored)), Answer(200, b"<html/>", "text/html"), count=1))
    proxy.add(Rule("/containers$", Reply(lambda: {"object": "list", "data": []})))
    first = client.get(content_url(stored))
    assert (first.content, first.headers["content-type"]) == (b"<html/>", "text/html")
    assert client.get(content_url(stored)).content == CONTENT
    assert client.get("containers").json() == {"object": "list", "data": []}


def test_stall_never_answers(
    proxy: LyingProxy, client: httpx.Client, stored: tuple[str, str]
) -> None:
    proxy.add(Rule(re.escape(content_url(stored)), Stall()))
    with pytest.raises(httpx.ReadTimeout):
        client.get(content_url(stored), timeout=0.5)


def test_short_body_is_well_framed_and_short(
    proxy: LyingProxy, client: httpx.Client, stored: tuple[str, str]
) -> None:
    proxy.add(Rule(re.escape(content_url(stored)), ShortBody(keep=12)))
    response = client.get(content_url(stored))
    assert (response.headers["content-length"], response.content) == ("12", CONTENT[:12])


def test_drop_closes_without_an_answer(
    proxy: LyingProxy, client: httpx.Client, stored: tuple[str, str]
) -> None:
    proxy.add(Rule(re.escape(content_url(stored)), Drop()))
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(content_url(stored))


def test_trickle_sends_the_real_body_a_byte_at_a_time(
    proxy: LyingProxy, client: httpx.Client, stored: tuple[str, str]
) -> None:
    proxy.add(Rule(re.escape(content_url(stored)), Trickle(interval=0.01)))
    with client.stream("GET", content_url(stored)) as response:
        chunks = list(response.iter_raw())
    assert b"".join(chunks) == CONTENT
    assert len(chunks) > 1
