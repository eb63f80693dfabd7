"""A small synchronous client of a node's HTTP API (the CLI's only way to talk to a node)."""

from __future__ import annotations

import functools
import http.client
import io
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from core import LiveLedgerError, parse_address
from core.errors import InvalidAddress

# The largest answer taken from a node: the largest a node gives (a full block's
# transaction summaries; GET /v1/genesis, whose JSON is at most 32 MiB and whose
# encoding is at most 8 MiB, in hex) fits. A hostile node's endless answer stops here.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
# How long a whole answer may take, headers and body: ``timeout`` bounds each read
# alone, so a node that drips a byte every few seconds would be waited on for ever.
ANSWER_TIMEOUT_S = 120.0
_CHUNK = 64 * 1024
# The largest value of the chain's integers (nonces, fees, heights, amounts, times): u64.
MAX_U64 = 2**64 - 1
# A node's 503 refusals that say "ask again" (with ``Retry-After``): its reads or answers
# at their bound, or the node starting or stopping. No answer about what was asked.
TRY_AGAIN = frozenset({"busy", "unavailable"})
# How long to wait before asking again after one of them (the node's Retry-After is 1 s).
TRY_AGAIN_S = 1.0


class NodeError(LiveLedgerError):
    """The node refused a request (``code`` is its stable error code) or is unreachable."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@contextmanager
def reading_answer(what: str) -> Iterator[None]:
    """Reading a node's answer: any shape is possible, and a wrong one is the node's
    fault (``bad_answer``), not a failure of this client."""
    try:
        yield
    # OverflowError: a number past what a field holds; RecursionError: "[[[[..." nested
    # past the decoder's limit.
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RecursionError) as exc:
        raise NodeError("bad_answer", f"the node's {what} is malformed: {exc!r}"[:200]) from None


def _bad_field(what: str, name: str, value: object, expected: str) -> NodeError:
    return NodeError(
        "bad_answer", f"the node's {what} states {name} {repr(value)[:40]}, not {expected}"
    )


def answer_field(doc: object, name: str, what: str) -> Any:
    """Field ``name`` of the node's document ``doc`` (its ``what``, for the error), which
    must be a JSON object holding it; else the node's ``bad_answer``.

    The typed readers below check what the field holds too: a node's answer is read
    through them, never indexed, so no shape it sends ends as a failure of this client,
    and a value that goes into something the user signs is in range before it does."""
    if not isinstance(doc, dict):
        raise NodeError("bad_answer", f"the node's {what} is not a JSON object")
    if name not in doc:
        raise NodeError("bad_answer", f"the node's {what} has no {name}")
    return doc[name]


def int_field(doc: object, name: str, what: str, low: int = 0, high: int = MAX_U64) -> int:
    """An integer field in ``low..high`` (by default the chain's u64)."""
    value = answer_field(doc, name, what)
    # Exact ints: true and 5.0 equal 1 and 5 in Python, and "5" is no number.
    if type(value) is not int or not low <= value <= high:
        raise _bad_field(what, name, value, f"an integer in {low}..{high}")
    return value


def str_field(doc: object, name: str, what: str) -> str:
    value = answer_field(doc, name, what)
    if not isinstance(value, str):
        raise _bad_field(what, name, value, "a string")
    return value


def hex_field(doc: object, name: str, what: str, sizes: tuple[int, ...] | None = None) -> bytes:
    """A field of bytes, as the node writes them: a hex string (of ``sizes`` bytes)."""
    value = answer_field(doc, name, what)
    if isinstance(value, str):
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            pass
        else:
            if sizes is None or len(raw) in sizes:
                return raw
    expected = "hex" if sizes is None else f"hex of {' or '.join(map(str, sizes))} bytes"
    raise _bad_field(what, name, value, expected)


def address_field(doc: object, name: str, what: str) -> str:
    """An account's address (``ll1…``)."""
    value = str_field(doc, name, what)
    try:
        parse_address(value)
    except InvalidAddress:
        raise _bad_field(what, name, value, "an address") from None
    return value


def object_field(doc: object, name: str, what: str) -> dict[str, Any]:
    value = answer_field(doc, name, what)
    if not isinstance(value, dict):
        raise _bad_field(what, name, value, "a JSON object")
    return value


def list_field(doc: object, name: str, what: str) -> list[Any]:
    value = answer_field(doc, name, what)
    if not isinstance(value, list):
        raise _bad_field(what, name, value, "a JSON array")
    return value


def node_url(text: str) -> str:
    """A node's base URL: ``http://`` when no scheme is given; only http and https."""
    url = text.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in ("http", "https") or not rest or rest.startswith("/"):
        raise NodeError(
            "bad_url", f"node URL {text!r} is not http://HOST:PORT (e.g. http://127.0.0.1:26657)"
        )
    return url


class _DeadlineIO(io.RawIOBase):
    """A response's socket reads, each waiting at most until the answer's deadline."""

    def __init__(self, raw: io.RawIOBase, sock: socket.socket, deadline: float, per_read: float):
        super().__init__()
        self.raw, self.sock, self.deadline, self.per_read = raw, sock, deadline, per_read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the answer did not come whole in time")
        self.sock.settimeout(min(self.per_read, left))
        return self.raw.readinto(buffer)

    def close(self) -> None:
        self.raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    def __init__(
        self, sock: socket.socket, *args: Any, deadline: float, per_read: float, **kwargs: Any
    ) -> None:
        super().__init__(sock, *args, **kwargs)
        # The status line and headers are read through it too: they can be dripped as well.
        raw = self.fp.detach()
        self.fp = io.BufferedReader(_DeadlineIO(raw, sock, deadline, per_read))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: a node's API never redirects, and urllib would read
    the redirect's body whole, past ``max_answer_bytes`` (a hostile node's endless one
    until the deadline: gigabytes), and follow it to ``ftp://``, whose reads no deadline
    bounds. A 3xx is raised as the ``HTTPError`` it is, its body unread."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        raise urllib.error.HTTPError(req.full_url, code, msg, headers, fp)


def _deadline_opener(deadline: float, per_read: float) -> urllib.request.OpenerDirector:
    """An opener whose answers (http and https) must arrive whole before ``deadline``,
    and that follows no redirect (``_NoRedirect``)."""
    response = functools.partial(_DeadlineResponse, deadline=deadline, per_read=per_read)

    class _HTTP(http.client.HTTPConnection):
        response_class = response  # type: ignore[assignment]  # a factory of HTTPResponse

    class _HTTPS(http.client.HTTPSConnection):
        response_class = response  # type: ignore[assignment]  # a factory of HTTPResponse

    class _HTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(_HTTP, req)

    class _HTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(_HTTPS, req)

    return urllib.request.build_opener(_HTTPHandler, _HTTPSHandler, _NoRedirect)


class NodeClient:
    """``timeout`` bounds each connect and read; ``answer_timeout`` a whole answer, and
    ``max_answer_bytes`` its size: whatever a node sends, a call ends, in bounded memory."""

    def __init__(
        self,
        url: str,
        timeout: float = 10.0,
        *,
        answer_timeout: float = ANSWER_TIMEOUT_S,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self.url = node_url(url)
        self.timeout = timeout
        self.answer_timeout = answer_timeout
        self.max_answer_bytes = max_answer_bytes

    def _read(self, resp: Any, path: str) -> bytes:
        """The answer's body, refused past ``max_answer_bytes``."""
        parts: list[bytes] = []
        size = 0
        while chunk := resp.read1(_CHUNK):
            size += len(chunk)
            if size > self.max_answer_bytes:
                raise NodeError(
                    "too_large",
                    f"{self.url} answered {path} with more than {self.max_answer_bytes} bytes",
                )
            parts.append(chunk)
        return b"".join(parts)

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        ctype: str = "",
        headers: dict[str, str] | None = None,
    ) -> Any:
        req = urllib.request.Request(
            self.url + path, data=body, headers=headers or {}, method=method
        )
        if ctype:
            req.add_header("Content-Type", ctype)
        opener = _deadline_opener(time.monotonic() + self.answer_timeout, self.timeout)
        try:
            with opener.open(req, timeout=self.timeout) as resp:
                raw = self._read(resp, path)
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400:
                # Not followed (``_NoRedirect``), its body unread; where it points is said,
                # so a user whose node is really there can give that URL.
                location = exc.headers.get("Location", "") if exc.headers else ""
                exc.close()
                raise NodeError(
                    "redirected",
                    f"{self.url} answered {path} with a redirect (HTTP {exc.code}) to "
                    f"{location[:200]!r}, which is not followed: a node's API does not "
                    "redirect (if the node is there, give that URL as the node's)",
                    exc.code,
                ) from None
            try:
                raw = self._read(exc, path)
            except (OSError, http.client.HTTPException) as read_error:
                raise NodeError(
                    "http_error", f"HTTP {exc.code}, its body unreadable: {read_error}", exc.code
                ) from None
            finally:
                exc.close()
            try:
                doc = json.loads(raw)
                raise NodeError(doc["code"], doc["message"], exc.code) from None
            except (ValueError, KeyError, TypeError, RecursionError):
                raise NodeError("http_error", f"HTTP {exc.code}: {raw[:200]!r}", exc.code) from None
        except TimeoutError:
            raise NodeError(
                "timeout",
                f"{self.url} did not answer {path} within {self.answer_timeout:g} s "
                f"(or was silent for {self.timeout:g} s)",
            ) from None
        except urllib.error.URLError as exc:
            raise NodeError(
                "unreachable", f"cannot reach node at {self.url}: {exc.reason}"
            ) from None
        except http.client.HTTPException as exc:
            # An answer that is not HTTP, or cut short (IncompleteRead, a status line past
            # its length limit).
            raise NodeError(
                "bad_answer", f"{self.url} answered {path} with broken HTTP: {exc!r}"[:300]
            ) from None
        except (OSError, ValueError) as exc:
            # ValueError: a URL urllib cannot use (node_url lets few through).
            raise NodeError("unreachable", f"cannot reach node at {self.url}: {exc}") from None
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            # RecursionError: "[[[[..." nested past the decoder's limit.
            raise NodeError(
                "bad_answer", f"{self.url} answered {path} with something that is not JSON"
            ) from None

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def post_json(self, path: str, doc: Any) -> Any:
        return self._request("POST", path, json.dumps(doc).encode(), "application/json")

    def get_object(self, path: str) -> dict[str, Any]:
        """The node's answer to GET ``path``, one of its documents: a JSON object."""
        return self._object(self.get(path), path)

    def post_object(self, path: str, doc: Any) -> dict[str, Any]:
        """The node's answer to POSTing ``doc`` to ``path``: a JSON object."""
        return self._object(self.post_json(path, doc), path)

    def _object(self, doc: Any, path: str) -> dict[str, Any]:
        # Any JSON can come back; callers index the document, so another shape is the
        # node's bad answer here rather than a TypeError in whoever reads it.
        if not isinstance(doc, dict):
            raise NodeError(
                "bad_answer",
                f"{self.url} answered {path} with JSON that is not an object",
            )
        return doc

    def status(self) -> dict[str, Any]:
        return self.get_object("/v1/status")

    def genesis(self) -> dict[str, Any]:
        return self.get_object("/v1/genesis")

    def params(self) -> dict[str, Any]:
        """The chain parameters in force (``{"height", "params", "pending"}``)."""
        return self.get_object("/v1/params")

    def account(self, address: str, proof: bool = False) -> dict[str, Any]:
        return self.get_object(f"/v1/accounts/{address}" + ("?proof=true" if proof else ""))

    def block(self, height: int | str) -> dict[str, Any]:
        return self.get_object(f"/v1/blocks/{height}")

    def submit(self, encoded_tx: bytes) -> str:
        tx_hash = self.post_object("/v1/txs", {"tx": encoded_tx.hex()}).get("hash")
        if not isinstance(tx_hash, str):
            raise NodeError("bad_answer", f"{self.url} accepted a transaction without its hash")
        return tx_hash

    def simulate(self, encoded_tx: bytes) -> dict[str, Any]:
        """The receipt the transaction would get in the next block (nothing is sent)."""
        return self.post_object("/v1/txs/simulate", {"tx": encoded_tx.hex()})

    def tx(self, tx_hash: str) -> dict[str, Any]:
        return self.get_object(f"/v1/txs/{tx_hash}")

    def wait_committed(self, tx_hash: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll until the transaction is committed; raise NodeError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                doc = self.tx(tx_hash)
                if str_field(doc, "status", f"transaction {tx_hash}") == "committed":
                    return doc
            except NodeError as exc:
                # Not yet known can be a race with the mempool's bookkeeping (on a node
                # that pruned old blocks, said as maybe_pruned); a busy node said nothing
                # about it (raised, the transaction sent read as one refused before any
                # block, exit 2, and sending it again pays twice).
                if exc.code not in ("not_found", "maybe_pruned", *TRY_AGAIN):
                    raise
                pause = TRY_AGAIN_S if exc.code in TRY_AGAIN else 0.2
            else:
                pause = 0.2
            if time.monotonic() > deadline:
                raise NodeError("timeout", f"transaction {tx_hash} not committed after {timeout} s")
            time.sleep(pause)
