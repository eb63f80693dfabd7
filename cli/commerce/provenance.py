"""``liveledger item``: serialized items, EPCIS attestations, custody, proven history."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from apps.commerce import payloads as tx
from apps.commerce.item_proofs import verify_item_page
from apps.commerce.model import ItemId
from cli.client import (
    NodeClient,
    NodeError,
    answer_field,
    int_field,
    list_field,
    object_field,
)
from cli.commerce.commands import U64, TxOpts, _echo_json, _hash_option, _hex32, _when, tx_command
from cli.human import GTIN, WHEN, When
from cli.light import certified_header, producers_at
from cli.main import clear_errors, genesis_option, main, node_option, trust_keyring_option
from cli.trust import Anchor, proof_anchor
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
    """Refuse custody of an item handed to the signer, or withdraw the signer's own
    pending hand-off of an item it holds."""
    t.send(tx.REFUSE_CUSTODY, tx.ItemRef(ItemId(gtin, serial)))


# Events `item history` fetches at most unless --max-events says otherwise. It prints
# the whole history as one JSON document, so it holds all of it (and, with --prove, each
# page's proofs while the page is checked): a node serves a history of any length a page
# at a time, and a griefed one can hold millions of events.
MAX_HISTORY_EVENTS = 10_000


@item.command("history")
@_with_item
@click.option(
    "--prove",
    is_flag=True,
    help="Verify every page against one finalized header (the first page's height).",
)
@click.option(
    "--max-events",
    type=click.IntRange(min=1),
    default=MAX_HISTORY_EVENTS,
    show_default=True,
    help="Fetch at most this many events: a longer history is refused before its "
    "second page is fetched (the node serves up to 256 events a page).",
)
@genesis_option
@trust_keyring_option("Where --prove finds the pinned genesis and the producers verified before")
@node_option
@clear_errors
def item_history(
    gtin: str,
    serial: str,
    prove: bool,
    max_events: int,
    genesis_file: Path | None,
    keyring: Path | None,
    node_url: str,
) -> None:
    """An item's full provenance history (what the code on its package resolves to),
    fetched a page at a time, every page at the height of the first."""
    client = NodeClient(node_url)
    path = f"/v1/items/01/{gtin}/21/{serial}"
    first = client.get(path)
    out: dict[str, Any] = {"height": int_field(first, "height", _ITEM)}
    if prove:
        anchor = proof_anchor(client, keyring, genesis_file)
        history, out["proof"] = _proven_history(
            client, path, first, gtin, serial, max_events, anchor
        )
    else:
        history = _history(client, path, first, max_events)
    out["item"] = {**object_field(first, "item", _ITEM), "history": history}
    _echo_json(out)


# What an item page is called in the node's bad_answer.
_ITEM = "item page"


def _history_page(doc: Any) -> list[Any]:
    return list_field(object_field(doc, "item", _ITEM), "history", _ITEM)


def _next_from_seq(doc: Any) -> int | None:
    """Where the next page starts; None: this page is the last."""
    if answer_field(doc, "next_from_seq", _ITEM) is None:
        return None
    return int_field(doc, "next_from_seq", _ITEM)


def _too_long(count: int, max_events: int) -> NodeError:
    return NodeError(
        "over_max_events",
        f"the item has {count} events, more than --max-events {max_events}; raise it to "
        "fetch them all",
    )


def _history(
    client: NodeClient, path: str, first: dict[str, Any], max_events: int
) -> list[dict[str, Any]]:
    """Every event of the history as the node tells it (no proof checked), page after
    page at the first page's height."""
    height, history = int_field(first, "height", _ITEM), list(_history_page(first))
    # Older nodes state neither the count nor the next page: one page is all there is.
    count = int_field(first, "event_count", _ITEM) if "event_count" in first else len(history)
    at = _next_from_seq(first) if "next_from_seq" in first else None
    if count > max_events:
        raise _too_long(count, max_events)
    while at is not None:
        doc = client.get(f"{path}?from_seq={at}&height={height}")
        page = _history_page(doc)
        # Unchecked, but never a loop: each page goes on from where the last one ended.
        same = int_field(doc, "height", _ITEM) == height and int_field(doc, "from_seq", _ITEM) == at
        if not same or not page:
            raise NodeError(
                "bad_answer", f"the node's page from event {at} at height {height} is another"
            )
        history.extend(page)
        if len(history) > max_events:
            raise _too_long(len(history), max_events)
        at = _next_from_seq(doc)
    return history


def _proven_history(
    client: NodeClient,
    path: str,
    first: dict[str, Any],
    gtin: str,
    serial: str,
    max_events: int,
    anchor: Anchor,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every event of the history, each page checked against the first page's header
    (so each event printed is the proven one), and what the proof established."""
    genesis = anchor.genesis
    proof = object_field(first, "proof", _ITEM)
    height = int_field(proof, "height", _ITEM, low=1)
    # The header is final: more than 2/3 of that height's producers signed it ...
    validators = producers_at(client, genesis, height, anchor.cache)
    header_hex, commit_hex = (
        answer_field(proof, "header", _ITEM),
        answer_field(proof, "commit", _ITEM),
    )
    header = certified_header(genesis, height, header_hex, commit_hex, validators)
    # ... and every page is this item's, at that height, its events the ones that follow
    # the last page's, and what is printed (record and every event, field by field) is
    # the proven one.
    page = verify_item_page(first, gtin, serial, header)
    # The proven count: a node cannot make a history look longer or shorter than it is.
    if page.item.event_count > max_events:
        raise _too_long(page.item.event_count, max_events)
    history, pages, events = list(_history_page(first)), 1, len(page.events)
    while page.next_from_seq is not None:
        at = page.next_from_seq
        doc = client.get(f"{path}?from_seq={at}&height={height}")
        page = verify_item_page(doc, gtin, serial, header, at)
        history.extend(_history_page(doc))
        pages, events = pages + 1, events + len(page.events)
    return history, {
        "verified": True,
        "height": height,
        "state_root": header.state_root.hex(),
        "events": events,
        "pages": pages,
        "custodian": format_address(page.item.custodian),
        "genesis_hash": genesis.hash.hex(),
    }
