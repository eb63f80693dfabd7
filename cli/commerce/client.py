"""``CommerceClient``: the node client plus signed reads (orders are private to their parties)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cli.client import NodeClient, NodeError
from cli.keyring import Keyring, passphrase_from_env_or_prompt
from cli.trust import Anchor, signing_chain_id


class CommerceClient(NodeClient):
    """NodeClient plus signed reads."""

    def get_signed(self, path: str, keyring: Path, name: str, anchor: Anchor | None) -> Any:
        """GET ``path`` signed by key ``name`` (orders are private to their parties), for
        ``anchor``'s chain id once the node shows that chain (None: the node's chain id)."""
        # Not at the top: through apps.routes it imports aiohttp, which --help never needs.
        from apps.commerce.signed_reads import sign_read_request

        status = self.status()
        chain_id = signing_chain_id(status, self.url, anchor)
        # Signed for this node only: whoever sees the request cannot replay it to another.
        node = _node_key(status, self.url)
        key = Keyring(keyring).load(name, passphrase_from_env_or_prompt(confirm=False))
        headers = sign_read_request(key, chain_id, "GET", path, node=node)
        return self._request("GET", path, headers=headers)


def _node_key(status: Any, url: str) -> bytes:
    """The key of the node at ``url`` (its status's ``validator``): what a read is signed for."""
    text = status.get("validator") if isinstance(status, dict) else None
    try:
        key = bytes.fromhex(text) if isinstance(text, str) else b""
    except ValueError:
        key = b""
    if len(key) != 32:
        raise NodeError(
            "bad_answer", f"{url} states no 32-byte node key (validator) to sign a read for"
        )
    return key
