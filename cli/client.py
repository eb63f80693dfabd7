"""A small synchronous client of a node's HTTP API (the CLI's only way to talk to a node)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from core import LiveLedgerError


class NodeError(LiveLedgerError):
    """The node refused a request (``code`` is its stable error code) or is unreachable."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


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


class NodeClient:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = node_url(url)
        self.timeout = timeout

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
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                doc = json.loads(raw)
                raise NodeError(doc["code"], doc["message"], exc.code) from None
            except (ValueError, KeyError, TypeError, RecursionError):
                raise NodeError("http_error", f"HTTP {exc.code}: {raw[:200]!r}", exc.code) from None
        except urllib.error.URLError as exc:
            raise NodeError(
                "unreachable", f"cannot reach node at {self.url}: {exc.reason}"
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

    def status(self) -> dict[str, Any]:
        return self.get("/v1/status")

    def genesis(self) -> dict[str, Any]:
        return self.get("/v1/genesis")

    def params(self) -> dict[str, Any]:
        """The chain parameters in force (``{"height", "params", "pending"}``)."""
        return self.get("/v1/params")

    def account(self, address: str, proof: bool = False) -> dict[str, Any]:
        return self.get(f"/v1/accounts/{address}" + ("?proof=true" if proof else ""))

    def block(self, height: int | str) -> dict[str, Any]:
        return self.get(f"/v1/blocks/{height}")

    def submit(self, encoded_tx: bytes) -> str:
        return self.post_json("/v1/txs", {"tx": encoded_tx.hex()})["hash"]

    def simulate(self, encoded_tx: bytes) -> dict[str, Any]:
        """The receipt the transaction would get in the next block (nothing is sent)."""
        return self.post_json("/v1/txs/simulate", {"tx": encoded_tx.hex()})

    def tx(self, tx_hash: str) -> dict[str, Any]:
        return self.get(f"/v1/txs/{tx_hash}")

    def wait_committed(self, tx_hash: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll until the transaction is committed; raise NodeError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                doc = self.tx(tx_hash)
                if doc["status"] == "committed":
                    return doc
            except NodeError as exc:
                # Not yet known can be a race with the mempool's bookkeeping.
                if exc.code != "not_found":
                    raise
            if time.monotonic() > deadline:
                raise NodeError("timeout", f"transaction {tx_hash} not committed after {timeout} s")
            time.sleep(0.2)
