"""The HTML pages ``/batches`` and ``/batches/{id}``, fetched over real HTTP as a browser would."""

from __future__ import annotations

import html
import html.parser
import urllib.parse

import httpx
import pytest
from conftest import request_line, upload, wait_terminal

HOSTILE = "</td><script>alert('x')</script>&\"quoted\""


class _Links(html.parser.HTMLParser):
    """Collects every href and every attribute that would load an asset."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.assets: list[tuple[str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name == "href":
                self.hrefs.append(value)
            elif name in ("src", "srcset", "action", "poster") or (tag == "link" and name == "rel"):
                self.assets.append((tag, name))


def _parse(text: str) -> _Links:
    links = _Links()
    links.feed(text)
    return links


@pytest.fixture
def web(emulator):
    with httpx.Client(base_url=emulator.root_url) as web:
        yield web


def _assert_self_contained(response: httpx.Response) -> _Links:
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    links = _parse(response.text)
    assert links.assets == [] and "script" not in links.tags
    assert all(href.startswith("/") and not href.startswith("//") for href in links.hrefs), links.hrefs
    return links


def test_batch_page_shows_the_batch_and_links_its_files(emulator, client, web):
    emulator.configure(fail_custom_id_regex="bad")
    lines = [request_line("ok-1"), request_line("bad-1"), request_line("ok-2")]
    batch = client.batches.create(
        input_file_id=upload(client, lines),
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"owner<b>": HOSTILE},
    )
    final, _ = wait_terminal(client, batch.id)

    response = web.get(f"/batches/{batch.id}")
    assert response.status_code == 200
    links = _assert_self_contained(response)
    text = response.text
    for shown in (final.id, final.status, final.endpoint, final.model, "3 total, 2 completed, 1 failed"):
        assert html.escape(shown) in text
    assert HOSTILE not in text and "<b>" not in text
    assert html.escape(HOSTILE, quote=True) in text and html.escape("owner<b>") in text
    for stamp in ("created_at", "in_progress_at", "finalizing_at", "completed_at", "expires_at"):
        assert stamp in text
    file_links = {href for href in links.hrefs if href.startswith("/v1/files/")}
    assert file_links == {
        f"/v1/files/{file_id}/content"
        for file_id in (final.input_file_id, final.output_file_id, final.error_file_id)
    }
    for href in file_links:  # each link serves the file's bytes
        assert web.get(href).content == client.files.content(href.split("/")[3]).content
    assert f"/v1/batches/{batch.id}" in links.hrefs and "/batches" in links.hrefs
    assert emulator.calls(path_prefix="/batches") == []  # pages are not API calls


def test_batch_page_escapes_validation_errors(client, web):
    hostile_id = "<img src=x onerror=alert(1)>"
    lines = [request_line(hostile_id), request_line(hostile_id)]
    batch = client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/chat/completions", completion_window="24h"
    )
    final, _ = wait_terminal(client, batch.id)
    assert final.status == "failed"

    response = web.get(f"/batches/{batch.id}")
    _assert_self_contained(response)
    assert hostile_id not in response.text
    for error in final.errors.data:
        assert html.escape(error.code) in response.text
        assert html.escape(error.message, quote=True) in response.text


def test_deleted_file_is_shown_without_a_link(client, web):
    file_id = upload(client, [request_line("a")])
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait_terminal(client, batch.id)
    client.files.delete(file_id)
    links = _parse(web.get(f"/batches/{batch.id}").text)
    assert f"/v1/files/{file_id}/content" not in links.hrefs


def test_unknown_batch_is_a_404_page(web):
    response = web.get("/batches/batch_<nope>")
    assert response.status_code == 404
    _assert_self_contained(response)
    assert "batch_&lt;nope&gt;" in response.text and "batch_<nope>" not in response.text


def test_batch_list_page_links_each_batch_newest_first_and_pages(emulator, web):
    older = emulator.seed_batches(3, status="in_progress", metadata={"who": HOSTILE})
    newer = emulator.seed_batches(2, status="completed")
    expected = [*reversed(newer), *reversed(older)]

    first = web.get("/batches", params={"limit": 3})
    assert first.status_code == 200
    links = _assert_self_contained(first)
    assert HOSTILE not in first.text
    batch_links = [href for href in links.hrefs if href.startswith("/batches/")]
    assert batch_links == [f"/batches/{batch_id}" for batch_id in expected[:3]]
    (older_link,) = [href for href in links.hrefs if href.startswith("/batches?")]
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(older_link).query) == {
        "after": [expected[2]],
        "limit": ["3"],
    }

    second = _parse(web.get(older_link).text)
    assert [href for href in second.hrefs if href.startswith("/batches/")] == [
        f"/batches/{batch_id}" for batch_id in expected[3:]
    ]
    assert not [href for href in second.hrefs if href.startswith("/batches?")]
    for href in batch_links:
        assert web.get(href).status_code == 200


@pytest.mark.parametrize(
    "params",
    [
        {"after": "batch_unknown"},
        {"after": HOSTILE},
        {"limit": 0},
        {"limit": -5},
        {"limit": "abc"},
        {"limit": "1e3"},
        {"limit": "9" * 40},
        {"limit": HOSTILE},
        {"limit": ["2", "x"]},
    ],
)
def test_bad_parameters_are_answered_as_pages(web, params):
    response = web.get("/batches", params=params)
    assert response.status_code == 400
    links = _assert_self_contained(response)
    assert "/batches" in links.hrefs
    assert HOSTILE not in response.text and "<script>" not in response.text
    assert ("limit" in params) == ("Expected `limit` between 1 and 1000" in response.text)


def test_empty_list(web):
    assert "No batches yet" in web.get("/batches").text
