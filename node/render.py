"""JSON views of chain objects for the HTTP API (hex for bytes, bech32m for addresses).

Each view's schema is declared beside it (a ``Component`` of the OpenAPI document).
"""

from __future__ import annotations

from typing import Any

from apps.routes import (
    HASH,
    PUBLIC_KEY,
    STR,
    UINT,
    Component,
    array,
    described,
    hex_bytes,
    nullable,
    obj,
    ref,
)
from core import Block, BlockHeader, Commit, SignedTx, TxBody, address_of, format_address, tx_hash

COMMIT = Component(
    "Commit",
    obj(
        {
            "height": UINT,
            "round": UINT,
            "block_hash": HASH,
            "signatures": array(
                obj({"validator": PUBLIC_KEY, "signature": described(hex_bytes(64), "Ed25519")})
            ),
            "encoded": described(ref("Hex"), "the canonical encoding, for verifying clients"),
        },
        description="commit certificate: more than 2/3 of the producers' precommits",
    ),
)


def commit_json(commit: Commit | None) -> dict[str, Any] | None:
    if commit is None:
        return None
    return {
        "height": commit.height,
        "round": commit.round,
        "block_hash": commit.block_hash.hex(),
        "signatures": [
            {"validator": s.validator.hex(), "signature": s.signature.hex()}
            for s in commit.signatures
        ],
        "encoded": commit.encode().hex(),
    }


HEADER = Component(
    "Header",
    obj(
        {
            "hash": HASH,
            "chain_id": STR,
            "height": UINT,
            "round": UINT,
            "time_ms": described(UINT, "block time, unix ms"),
            "prev_hash": HASH,
            "tx_root": HASH,
            "state_root": HASH,
            "receipt_root": HASH,
            "producer": PUBLIC_KEY,
            "producer_set_hash": HASH,
            "last_commit": nullable(COMMIT),
            "encoded": described(ref("Hex"), "the canonical encoding (its hash is `hash`)"),
        }
    ),
)


def header_json(header: BlockHeader) -> dict[str, Any]:
    return {
        "hash": header.hash.hex(),
        "chain_id": header.chain_id,
        "height": header.height,
        "round": header.round,
        "time_ms": header.time_ms,
        "prev_hash": header.prev_hash.hex(),
        "tx_root": header.tx_root.hex(),
        "state_root": header.state_root.hex(),
        "receipt_root": header.receipt_root.hex(),
        "producer": header.producer.hex(),
        "producer_set_hash": header.producer_set_hash.hex(),
        "last_commit": commit_json(header.last_commit),
        "encoded": header.encode().hex(),
    }


TX_SUMMARY = Component(
    "TxSummary",
    obj(
        {
            "hash": HASH,
            "sender": ref("Address"),
            "size": described(UINT, "encoded bytes"),
            "type": STR,
            "nonce": UINT,
            "fee": UINT,
            "expiry_height": UINT,
        },
        optional=("type", "nonce", "fee", "expiry_height"),
    ),
)


def tx_summary(encoded: bytes) -> dict[str, Any]:
    """Hash, sender, size and body fields of one of a block's encoded transactions."""
    out: dict[str, Any] = {"hash": tx_hash(encoded).hex(), "size": len(encoded)}
    # Transactions in committed blocks were verified and decode; be defensive anyway.
    try:
        tx = SignedTx.decode(encoded)
        out["sender"] = format_address(address_of(tx.sender))
        body = TxBody.decode(tx.body)
    except Exception:
        return out
    out.update(type=body.type, nonce=body.nonce, fee=body.fee, expiry_height=body.expiry_height)
    return out


BLOCK = Component(
    "Block",
    obj(
        {
            "header": HEADER,
            "num_txs": UINT,
            "commit": described(nullable(COMMIT), "this block's certificate (null if not stored)"),
            "txs": described(array(TX_SUMMARY), "without `?txs=false|hashes`"),
            "tx_hashes": described(array(HASH), "with `?txs=hashes`"),
        },
        optional=("txs", "tx_hashes"),
    ),
)


def header_only_json(header: BlockHeader, num_txs: int, commit: Commit | None) -> dict[str, Any]:
    return {"header": header_json(header), "num_txs": num_txs, "commit": commit_json(commit)}


def block_json(block: Block, commit: Commit | None) -> dict[str, Any]:
    out = header_only_json(block.header, len(block.txs), commit)
    out["txs"] = [tx_summary(tx) for tx in block.txs]
    return out


EVENT = Component(
    "Event",
    obj(
        {
            "kind": described(STR, "e.g. `transfer`, `commerce.order_placed`"),
            "attrs": {
                "type": "object",
                "additionalProperties": STR,
                "description": "string attributes: integers in decimal, bytes in hex",
            },
        }
    ),
)
RECEIPT = Component(
    "Receipt",
    obj(
        {
            "tx_hash": HASH,
            "code": ref("ReceiptCode"),
            "message": described(STR, "empty on success; else names expected and actual values"),
            "fee": UINT,
            "events": array(EVENT),
        }
    ),
)
