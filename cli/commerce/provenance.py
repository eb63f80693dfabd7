"""``liveledger item``: serialized items, EPCIS attestations, custody, proven history."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from apps.commerce import payloads as tx
from apps.commerce.http import verify_item_proof
from apps.commerce.model import ItemId
from cli.client import NodeClient, NodeError
from cli.commerce.commands import U64, TxOpts, _echo_json, _hash_option, _hex32, _now_ms, tx_command
from cli.light import certified_header, producers_at, trusted_genesis
from cli.main import clear_errors, genesis_option, main, node_option
from core import format_address, parse_address


@main.group()
def item() -> None:
    """Serialized items: registration, EPCIS attestations, custody hand-offs."""


item_args = [click.argument("gtin"), click.argument("serial")]


def _with_item(fn: Callable[..., Any]) -> Callable[..., Any]:
    for arg in reversed(item_args):
        fn = arg(fn)
    return fn


@tx_command(item, "register")
@_with_item
@click.option("--description", required=True)
@click.option("--read-point", required=True, help="Where it was commissioned (EPCIS readPoint).")
@click.option("--event-time-ms", type=U64, default=None, help="Default: the latest block time.")
def item_register(
    t: TxOpts, gtin: str, serial: str, description: str, read_point: str, event_time_ms: int | None
) -> None:
    """Register a serialized item (maker): GTIN-14 and serial."""
    client = t.client
    when = _now_ms(client) if event_time_ms is None else event_time_ms
    t.send(
        tx.REGISTER_ITEM,
        tx.RegisterItem(ItemId(gtin, serial), description, read_point, when),
        client,
    )


@tx_command(item, "attest")
@_with_item
@click.option(
    "--step", "biz_step", required=True, help="inspecting, packing, shipping, receiving, ..."
)
@click.option("--disposition", default="", help="EPCIS disposition, e.g. in_progress.")
@click.option("--read-point", default="")
@click.option("--location", "biz_location", default="", help="EPCIS bizLocation.")
@click.option("--event-time-ms", type=U64, default=None, help="Default: the latest block time.")
@_hash_option("--data-hash", "Hash of an off-chain document (report, photo)")
def item_attest(
    t: TxOpts,
    gtin: str,
    serial: str,
    biz_step: str,
    disposition: str,
    read_point: str,
    biz_location: str,
    event_time_ms: int | None,
    data_hash: str,
) -> None:
    """Attest an event of an item in the signer's custody (maker, carrier, inspector)."""
    client = t.client
    when = _now_ms(client) if event_time_ms is None else event_time_ms
    payload = tx.Attest(
        ItemId(gtin, serial),
        biz_step,
        disposition,
        read_point,
        biz_location,
        when,
        _hex32(data_hash, "--data-hash"),
    )
    t.send(tx.ATTEST, payload, client)


@tx_command(item, "handoff")
@_with_item
@click.option("--to", "to", required=True, help="Address of the next custodian.")
def item_handoff(t: TxOpts, gtin: str, serial: str, to: str) -> None:
    """Propose a custody hand-off; it takes effect when the receiver accepts."""
    t.send(tx.PROPOSE_CUSTODY, tx.ProposeCustody(ItemId(gtin, serial), parse_address(to)))


@tx_command(item, "accept")
@_with_item
def item_accept(t: TxOpts, gtin: str, serial: str) -> None:
    """Accept custody of an item handed to the signer."""
    t.send(tx.ACCEPT_CUSTODY, tx.ItemRef(ItemId(gtin, serial)))


@tx_command(item, "refuse")
@_with_item
def item_refuse(t: TxOpts, gtin: str, serial: str) -> None:
    """Refuse custody of an item handed to the signer."""
    t.send(tx.REFUSE_CUSTODY, tx.ItemRef(ItemId(gtin, serial)))


@item.command("history")
@_with_item
@click.option("--prove", is_flag=True, help="Verify the history against a finalized header.")
@genesis_option
@node_option
@clear_errors
def item_history(
    gtin: str, serial: str, prove: bool, genesis_file: Path | None, node_url: str
) -> None:
    """An item's full provenance history (what the code on its package resolves to)."""
    client = NodeClient(node_url)
    doc = client.get(f"/v1/items/01/{gtin}/21/{serial}")
    out: dict[str, Any] = {"height": doc["height"], "item": doc["item"]}
    if prove:
        genesis = trusted_genesis(client, genesis_file)
        proof = doc["proof"]
        height = proof["height"]
        # The header is final: more than 2/3 of that height's producers signed it ...
        validators = producers_at(client, genesis, height)
        header = certified_header(genesis, height, proof["header"], proof["commit"], validators)
        # ... and every entry is this item's, proven against its state root.
        proven, events = verify_item_proof(gtin, serial, proof, header.state_root)
        if len(events) != len(doc["item"]["history"]):
            raise NodeError("proof_mismatch", "the node's history differs from the proven one")
        out["proof"] = {
            "verified": True,
            "height": proof["height"],
            "state_root": header.state_root.hex(),
            "events": len(events),
            "custodian": format_address(proven.custodian),
            "genesis_hash": genesis.hash.hex(),
        }
    _echo_json(out)
