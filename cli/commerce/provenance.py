"""``liveledger item``: serialized items, EPCIS attestations, custody, proven history."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from apps.commerce import payloads as tx
from apps.commerce.model import ItemId
from cli.client import NodeClient, NodeError
from cli.commerce.commands import U64, TxOpts, _echo_json, _hash_option, _hex32, _when, tx_command
from cli.human import GTIN, WHEN, When
from cli.light import certified_header, producers_at, trusted_genesis
from cli.main import clear_errors, genesis_option, main, node_option
from core import format_address


@main.group()
def item() -> None:
    """Serialized items: registration, EPCIS attestations, custody hand-offs."""


# GTIN-8, -12, -13 or -14: padded to the 14 digits the chain stores.
item_args = [click.argument("gtin", type=GTIN), click.argument("serial")]


def _with_item(fn: Callable[..., Any]) -> Callable[..., Any]:
    for arg in reversed(item_args):
        fn = arg(fn)
    return fn


def event_time_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--event-time WHEN`` or ``--event-time-ms MS`` (default: the latest block time)."""
    fn = click.option(
        "--event-time-ms", type=U64, default=None, help="The same as epoch milliseconds."
    )(fn)
    return click.option(
        "--event-time",
        type=WHEN,
        default=None,
        help="When it happened: 'now', '5m ago', ISO (2026-12-03T20:00Z). Default: the "
        "latest block time (an event may not be after its block).",
    )(fn)


@tx_command(item, "register")
@_with_item
@click.option("--description", required=True)
@click.option("--read-point", required=True, help="Where it was commissioned (EPCIS readPoint).")
@event_time_options
def item_register(
    t: TxOpts,
    gtin: str,
    serial: str,
    description: str,
    read_point: str,
    event_time: When | None,
    event_time_ms: int | None,
) -> None:
    """Register a serialized item (maker): GTIN (8, 12, 13 or 14 digits) and serial."""
    client = t.client
    when = _when(client, event_time, event_time_ms, "event-time")
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
@event_time_options
@_hash_option("--data-hash", "Hash of an off-chain document (report, photo)")
def item_attest(
    t: TxOpts,
    gtin: str,
    serial: str,
    biz_step: str,
    disposition: str,
    read_point: str,
    biz_location: str,
    event_time: When | None,
    event_time_ms: int | None,
    data_hash: str,
) -> None:
    """Attest an event of an item in the signer's custody (maker, carrier, inspector)."""
    client = t.client
    when = _when(client, event_time, event_time_ms, "event-time")
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
@click.option(
    "--to", "to", required=True, help="The next custodian: an ll1... address or a key's name."
)
def item_handoff(t: TxOpts, gtin: str, serial: str, to: str) -> None:
    """Propose a custody hand-off; it takes effect when the receiver accepts."""
    t.send(tx.PROPOSE_CUSTODY, tx.ProposeCustody(ItemId(gtin, serial), t.resolve(to)))


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
        # Here, not at the top: the http module brings aiohttp, a tenth of a second of
        # every command's start-up.
        from apps.commerce.http import verify_item_doc

        genesis = trusted_genesis(client, genesis_file)
        proof = doc["proof"]
        height = proof["height"]
        # The header is final: more than 2/3 of that height's producers signed it ...
        validators = producers_at(client, genesis, height)
        header = certified_header(genesis, height, proof["header"], proof["commit"], validators)
        # ... every entry is this item's, proven against its state root, and the
        # item printed (record and every event, field by field) is the proven one.
        proven, events = verify_item_doc(doc["item"], gtin, serial, proof, header.state_root)
        # The height printed is the proven one.
        if doc["height"] != height:
            raise NodeError(
                "proof_mismatch", f"answer at height {doc['height']}, proof at {height}"
            )
        out["proof"] = {
            "verified": True,
            "height": proof["height"],
            "state_root": header.state_root.hex(),
            "events": len(events),
            "custodian": format_address(proven.custodian),
            "genesis_hash": genesis.hash.hex(),
        }
    _echo_json(out)
