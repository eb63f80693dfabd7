"""``CommerceClient``: the node client plus signed reads (orders are private to their parties)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from apps.commerce.http import sign_read_request
from cli.client import NodeClient, NodeError
from cli.keyring import Keyring, passphrase_from_env_or_prompt


class CommerceClient(NodeClient):
    """NodeClient plus signed reads, and the outcome of the last waited transaction."""

    last_committed: dict[str, Any] | None = None

    def wait_committed(self, tx_hash: str, timeout: float = 30.0) -> dict[str, Any]:
        doc = super().wait_committed(tx_hash, timeout)
        self.last_committed = doc
        return doc

    def get_signed(self, path: str, keyring: Path, name: str) -> Any:
        """GET ``path`` signed by key ``name`` (orders are private to their parties)."""
        key = Keyring(keyring).load(name, passphrase_from_env_or_prompt(confirm=False))
        chain_id = self.status()["chain_id"]
        headers = sign_read_request(key, chain_id, "GET", path)
        req = urllib.request.Request(self.url + path, headers=headers, method="GET")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                doc = json.loads(raw)
                code, message = doc["code"], doc["message"]
            except (ValueError, KeyError, TypeError):
                code, message = "http_error", f"HTTP {exc.code}: {raw[:200]!r}"
            raise NodeError(code, message, exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            raise NodeError("unreachable", f"cannot reach node at {self.url}: {exc}") from None
