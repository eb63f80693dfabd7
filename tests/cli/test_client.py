"""The node client turns whatever a node answers into a ``NodeError`` or a document."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from pathlib import Path

import pytest
from aiohttp import web
from click.testing import CliRunner

from cli.client import MAX_ANSWER_BYTES, NodeClient, NodeError
from cli.main import main  # first: cli.operator imported alone is an import cycle
from cli.operator import MAX_EVIDENCE_FILE_BYTES, OperatorError, member_key, read_evidence
from tests.fifos import fifo_holding
from tests.served import Served, app_server

BOMB = "[" * 100_000


async def serve(handler, path: str = "/v1/status") -> Served:
    """A node at a loopback port whose every GET ``path`` ``handler`` answers."""
    app = web.Application()
    app.router.add_get(path, handler)
    server = app_server(app)
    await server.start_server()
    return server


async def status_error(handler, **client_options) -> NodeError:
    """The error ``NodeClient.status`` raises against a node that ``handler`` answers."""
    server = await serve(handler)
    try:
        client = NodeClient(str(server.make_url("")), **client_options)
        with pytest.raises(NodeError) as info:
            await asyncio.to_thread(client.status)
        return info.value
    finally:
        await server.close()


@pytest.mark.parametrize("status, code", [(200, "bad_answer"), (400, "http_error")])
async def test_a_nesting_bomb_from_a_node_is_a_node_error(status, code):
    async def answer(_request: web.Request) -> web.Response:
        return web.Response(status=status, text=BOMB, content_type="application/json")

    assert (await status_error(answer)).code == code


def test_a_nesting_bomb_in_an_evidence_file_is_refused(tmp_path):
    path = tmp_path / "evidence.json"
    path.write_text('{"vote_a": ' + "[" * 10_000)
    with pytest.raises(OperatorError, match="not JSON"):
        read_evidence(path)


def test_an_evidence_file_that_is_not_a_regular_file_is_refused_unread(tmp_path):
    # A FIFO nobody writes to would block submit-evidence for ever.
    with fifo_holding(tmp_path / "evidence.fifo", MAX_EVIDENCE_FILE_BYTES + 1) as fifo:
        with pytest.raises(OperatorError, match=f"{fifo} is not a regular file but a FIFO"):
            read_evidence(fifo)
    with pytest.raises(OperatorError, match="/dev/null is not a regular file but a character"):
        read_evidence(Path("/dev/null"))


async def test_an_answer_dripped_a_byte_at_a_time_ends_at_the_answer_timeout():
    async def drip(request: web.Request) -> web.StreamResponse:
        # Valid JSON in the end, each byte well within the per-read timeout: only a
        # bound on the whole answer stops the wait.
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        await resp.write(b'{"chain_id": "')
        for _ in range(40):
            await asyncio.sleep(0.05)
            await resp.write(b"x")
        await resp.write(b'"}')
        return resp

    error = await status_error(drip, timeout=1.0, answer_timeout=0.5)
    assert error.code == "timeout" and "0.5 s" in error.message


@pytest.mark.parametrize("status", [200, 500])
async def test_an_endless_answer_is_cut_at_the_size_bound(status):
    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=status, headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        await resp.write(b'{"code": "x", "message": "')
        chunk = b"x" * 65536
        # Past the default bound (a test cannot wait for an endless one on the old code),
        # and still valid JSON at the end.
        for _ in range(MAX_ANSWER_BYTES // len(chunk) + 1):
            await resp.write(chunk)
        await resp.write(b'"}')
        return resp

    error = await status_error(endless)
    assert error.code == "too_large", error


@pytest.mark.parametrize("to", ["ftp", "self"])
async def test_a_redirect_is_refused_unfollowed_and_its_body_unread(to):
    # urllib follows a redirect to ftp:// (whose reads no answer deadline bounds, and to
    # any host the node names), and reads a redirect's body whole, past the size bound.
    elsewhere = socket.create_server(("127.0.0.1", 0))
    elsewhere.setblocking(False)
    target = f"ftp://127.0.0.1:{elsewhere.getsockname()[1]}/x" if to == "ftp" else "/v1/status"

    async def redirect(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=302, headers={"Location": target})
        await resp.prepare(request)
        # A body past the client's bound below (a test cannot wait for an endless one).
        for _ in range(16):
            await resp.write(b"x" * 65536)
        return resp

    try:
        error = await status_error(redirect, timeout=1.0, max_answer_bytes=1024)
        assert error.code == "redirected", error
        assert repr(target) in error.message
        # Nothing dialled the address the node named.
        with pytest.raises(BlockingIOError):
            elsewhere.accept()
    finally:
        elsewhere.close()


@pytest.mark.parametrize(
    "members",
    [
        {"members": [{"name": "alice", "public_key": "zz"}]},
        {"members": [{"name": "alice", "public_key": "ab" * 31}]},
        {"members": [{"name": "alice"}]},
        {"members": ["alice"]},
        {"members": None},
        [],
    ],
    ids=["bad hex", "short key", "no key", "no object", "no list", "no document"],
)
async def test_a_malformed_member_list_is_the_nodes_fault(members):
    # A member named on the command line is looked up on the node: whatever it answers,
    # a node error naming the answer, never "unexpected failure".
    async def answer(_request: web.Request) -> web.Response:
        return web.json_response(members)

    server = await serve(answer, "/v1/staking/members")
    try:
        client = NodeClient(str(server.make_url("")))
        with pytest.raises(NodeError) as info:
            await asyncio.to_thread(member_key, client, "alice")
        assert info.value.code == "bad_answer" and "member list" in info.value.message
    finally:
        await server.close()


async def test_a_member_is_found_by_name_or_refused_by_name():
    key = bytes(range(32))

    async def answer(_request: web.Request) -> web.Response:
        return web.json_response({"members": [{"name": "alice", "public_key": key.hex()}]})

    server = await serve(answer, "/v1/staking/members")
    try:
        client = NodeClient(str(server.make_url("")))
        assert await asyncio.to_thread(member_key, client, "alice") == key
        assert await asyncio.to_thread(member_key, client, key.hex()) == key
        with pytest.raises(OperatorError, match="neither a node key"):
            await asyncio.to_thread(member_key, client, "bob")
    finally:
        await server.close()


def test_an_evidence_file_that_names_a_vote_twice_is_refused(tmp_path):
    # json.loads would keep the second silently: which vote did the submitter mean?
    path = tmp_path / "evidence.json"
    path.write_text('{"vote_a": "00", "vote_a": "01", "vote_b": "02"}')
    with pytest.raises(OperatorError, match="duplicate JSON key 'vote_a'"):
        read_evidence(path)


def test_a_reserves_report_is_hashed_whole_and_must_be_a_file(tmp_path):
    from cli.currency import report_digest

    # Hashed in blocks, never held whole: a report of any size.
    path = tmp_path / "report.pdf"
    data = bytes(range(256)) * 40_000
    path.write_bytes(data)
    assert report_digest(path) == hashlib.sha256(data).digest()
    with fifo_holding(tmp_path / "report.fifo", 4096) as fifo:
        with pytest.raises(OperatorError, match="is not a regular file"):
            report_digest(fifo)
    with pytest.raises(OperatorError, match="/dev/zero is not a regular file"):
        report_digest(Path("/dev/zero"))


TX = "ab" * 32


@pytest.mark.parametrize(
    "answer", [[], "committed", 5, None], ids=["array", "string", "number", "null"]
)
@pytest.mark.parametrize(
    "argv, path",
    [(["query", "status"], "/v1/status"), (["query", "tx", TX], f"/v1/txs/{TX}")],
    ids=["status", "tx"],
)
async def test_a_node_answering_no_json_object_is_the_nodes_fault(argv, path, answer):
    # The node answers its documents as JSON objects; anything else is a bad answer of
    # the node's (exit 2), neither printed as its status nor an "unexpected failure".
    async def reply(_request: web.Request) -> web.Response:
        return web.json_response(answer)

    server = await serve(reply, path)
    try:
        done = await asyncio.to_thread(
            CliRunner().invoke, main, [*argv, "--node", str(server.make_url(""))]
        )
        assert done.exit_code == 2, done.output
        assert done.output.startswith("error: bad_answer: "), done.output
        assert path in done.output and "not an object" in done.output
    finally:
        await server.close()


@pytest.mark.parametrize("answer", [{}, {"hash": 5}, {"hash": None}, ["hash"]])
async def test_a_submission_answered_without_a_hash_is_the_nodes_fault(answer):
    async def reply(_request: web.Request) -> web.Response:
        return web.json_response(answer)

    app = web.Application()
    app.router.add_post("/v1/txs", reply)
    server = app_server(app)
    await server.start_server()
    try:
        client = NodeClient(str(server.make_url("")))
        with pytest.raises(NodeError) as info:
            await asyncio.to_thread(client.submit, b"tx")
        assert info.value.code == "bad_answer", info.value
    finally:
        await server.close()
