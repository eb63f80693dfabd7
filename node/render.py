"""JSON views of chain objects for the HTTP API (hex for bytes, bech32m for addresses)."""

from __future__ import annotations

from typing import Any

from core import Block, BlockHeader, Commit, SignedTx, TxBody, address_of, format_address, tx_hash
from vm import Receipt


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


def header_only_json(header: BlockHeader, num_txs: int, commit: Commit | None) -> dict[str, Any]:
    return {"header": header_json(header), "num_txs": num_txs, "commit": commit_json(commit)}


def block_json(block: Block, commit: Commit | None) -> dict[str, Any]:
    out = header_only_json(block.header, len(block.txs), commit)
    out["txs"] = [tx_summary(tx) for tx in block.txs]
    return out


def receipt_json(receipt: Receipt) -> dict[str, Any]:
    return {
        "tx_hash": receipt.tx_hash.hex(),
        "code": receipt.code,
        "message": receipt.message,
        "fee": receipt.fee,
        "events": [
            {"kind": e.kind, "attrs": {a.key: a.value for a in e.attrs}} for e in receipt.events
        ],
    }
