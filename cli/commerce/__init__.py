"""``liveledger merchant|listing|live|order|item|review|tip|roles|enc-key``: commerce.

Every transaction command signs with a key of the keyring (``--keyring``,
``--from``), prints the transaction hash and, with ``--wait``, its height and
the events it emitted (ids of what it created), or fails with the error code.
Reads go to the node's commerce routes; an order is read with a request signed
by the viewer's key (``apps.commerce.http.sign_read_request``).

Some forty flat commands, one per transaction or read, grouped by what they act on:

- ``commands``: what every command shares (option types and bundles, ``TxOpts``,
  the ``tx_command``/``read_command`` decorators, value helpers);
- ``client``: ``CommerceClient``, the node client with signed reads;
- ``enc_keys``: X25519 keys in the keyring and ``enc-key``;
- ``roles``: ``roles``;
- ``merchants``: ``merchant`` and ``listing``;
- ``sessions``: ``live`` (sessions, pins, flash deals) and ``tip``;
- ``orders``: ``order`` (placing, escrow, shipping, disputes, sealed addresses);
- ``provenance``: ``item``;
- ``reviews``: ``review``.
"""

from __future__ import annotations

# Importing a module adds its groups to ``liveledger`` (cli.main.main): cli.main
# imports this package for that, so every command module is imported here.
from cli.commerce import merchants, provenance, reviews, roles, sessions  # noqa: F401
from cli.commerce.client import CommerceClient
from cli.commerce.enc_keys import enc_key_new, enc_keys_of, enc_private
from cli.commerce.orders import tracking_hash

__all__ = [
    "CommerceClient",
    "enc_key_new",
    "enc_keys_of",
    "enc_private",
    "tracking_hash",
]
