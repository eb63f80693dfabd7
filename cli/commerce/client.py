"""``CommerceClient``: the node client plus signed reads (orders are private to their parties)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cli.client import NodeClient
from cli.keyring import Keyring, passphrase_from_env_or_prompt
from cli.trust import Anchor, signing_chain_id


class CommerceClient(NodeClient):
    """NodeClient plus signed reads."""

    def get_signed(self, path: str, keyring: Path, name: str, anchor: Anchor | None) -> Any:
        """GET ``path`` signed by key ``name`` (orders are private to their parties), for
        ``anchor``'s chain id once the node shows that chain (None: the node's chain id)."""
        # Not at the top: through apps.routes it imports aiohttp, which --help never needs.
        from apps.commerce.signed_reads import sign_read_request

        chain_id = signing_chain_id(self.status(), self.url, anchor)
        key = Keyring(keyring).load(name, passphrase_from_env_or_prompt(confirm=False))
        return self._request("GET", path, headers=sign_read_request(key, chain_id, "GET", path))
