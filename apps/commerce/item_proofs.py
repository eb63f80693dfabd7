"""Checking an item's history as a client gets it from an untrusted node, a page at a time.

``GET /v1/items/01/{gtin}/21/{serial}`` (``apps.commerce.http_items``) answers the item's
record and a page of its events, each with a state proof at one final height. A client
certifies that height's header (``cli.light``; ``web/src/lib/item.js`` in the browser,
which follows these checks) and checks every page against it here. Apart from the route
so that a client checks pages without loading the HTTP server (aiohttp).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from apps.commerce import keys, views
from apps.commerce.model import Item, ProvenanceEvent
from core.errors import Invalid
from core.types import BlockHeader
from storage import StateProof, verify_proof


@dataclass(frozen=True, slots=True)
class ItemPage:
    """What a verified page proves: the item's record (its custodian, owner and event
    count at the page's height) and its events ``from_seq..from_seq+len(events)-1``."""

    item: Item
    events: tuple[ProvenanceEvent, ...]
    from_seq: int
    # Where the next page starts; None when this page holds the last event.
    next_from_seq: int | None


def _bad(message: str) -> Invalid:
    return Invalid(message[:300], "bad_proof")


def _exactly(proven: Any, said: Any) -> bool:
    """``said`` (the node's JSON) is ``proven`` (a view's JSON form) in type as in value:
    Python's ``==`` takes true and 1.0 for 1, which a client would print as the node sent
    them (``"seq": true``)."""
    if type(proven) is not type(said):
        return False
    if isinstance(proven, dict):
        return proven.keys() == said.keys() and all(_exactly(proven[k], said[k]) for k in proven)
    if isinstance(proven, list):
        return len(proven) == len(said) and all(map(_exactly, proven, said))
    return bool(proven == said)


def _same_view(item_doc: Any, item: Item, events: Sequence[ProvenanceEvent]) -> None:
    """The node's ``item`` is, field by field, the view the proven record and events make."""
    proven = views.jsonable(views.item_view_of(item, list(events)))
    # Comparing the number of events alone let a node rewrite any event's contents.
    if not _exactly(proven, item_doc):
        fields = (
            sorted(
                k
                for k in proven.keys() | item_doc.keys()
                if k not in proven or k not in item_doc or not _exactly(proven[k], item_doc[k])
            )
            if isinstance(item_doc, dict)
            else ["item"]
        )
        raise Invalid(f"the node's item differs from the proven one in {fields}", "proof_mismatch")


def verify_item_page_proof(
    gtin: str, serial: str, proof_doc: dict[str, Any], state_root: bytes, from_seq: int = 0
) -> ItemPage:
    """Check a page's proof bundle against a trusted state root; return what it proves.

    ``state_root`` must come from a header the caller trusts (finalized, checked
    against the genesis producers) and ``from_seq`` is the seq the caller asked the page
    to start at, never the node's word. The entries must be exactly the item's keys:
    its record, then events ``from_seq, from_seq+1, ...`` in order, at least one and
    none past the record's ``event_count``. So a node cannot answer with another item's
    history, nor skip, repeat or reorder events. Raises ``Invalid`` (``bad_proof`` or
    the proof's own code).
    """
    ref = keys.item_ref(gtin, serial)
    entries = proof_doc.get("entries") if isinstance(proof_doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise _bad("the bundle holds no proof entries")
    proven: list[bytes] = []
    # The bundle comes from a node the caller does not trust: any shape is possible.
    try:
        if bytes.fromhex(proof_doc["state_root"]) != state_root:
            raise _bad("the bundle is proven against another state root")
        for at, entry in enumerate(entries):
            key = bytes.fromhex(entry["key"])
            seq = from_seq + at - 1
            expected = keys.item_key(ref) if at == 0 else keys.item_event_key(ref, seq)
            # Only this item's keys, in order from `from_seq`: no substitution, no gaps,
            # no repeats.
            if key != expected:
                raise _bad(f"entry {at} proves key {key.hex()}, expected {expected.hex()}")
            if entry["value"] is None:
                raise _bad(f"entry {at} proves an absent key")
            value = bytes.fromhex(entry["value"])
            verify_proof(state_root, key, value, StateProof.decode(bytes.fromhex(entry["proof"])))
            proven.append(value)
    # OverflowError: a seq past 4 bytes.
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise _bad(f"the bundle is not a proof bundle: {exc!r}") from None
    item = Item.decode(proven[0])
    # The key holds gtin || serial hashed: a GTIN of other than 14 digits splits the same
    # text elsewhere ("0950600013435", "2SN-1" is the item "09506000134352", "SN-1").
    if (item.gtin, item.serial) != (gtin, serial):
        raise _bad(f"the bundle proves item {item.gtin!r} {item.serial!r}")
    events = tuple(ProvenanceEvent.decode(v) for v in proven[1:])
    end = from_seq + len(events)
    # A page holds at least one event (or none, for a history that has none) ...
    if not events and from_seq < item.event_count:
        raise _bad(f"the page from event {from_seq} proves no event")
    # ... and none past the last one the record counts.
    if end > item.event_count:
        raise _bad(f"item has {item.event_count} events, the bundle proves up to {end}")
    return ItemPage(item, events, from_seq, end if end < item.event_count else None)


def verify_item_page(
    answer: dict[str, Any], gtin: str, serial: str, header: BlockHeader, from_seq: int = 0
) -> ItemPage:
    """One page of ``GET /v1/items/...`` checked whole against ``header`` (which the caller
    certified): the proof (``verify_item_page_proof``), the answer's height (every page of
    one history at that header's height: no page from another block), its ``item`` equal
    field by field to the view the proven record and events make (a client that prints
    the answer prints only what is proven), and its paging fields. Raises ``Invalid``:
    ``bad_proof``, or ``proof_mismatch`` where the answer differs from what is proven."""
    try:
        proof_doc, item_doc = answer["proof"], answer["item"]
        heights = (answer["height"], proof_doc["height"])
        paging = (answer["from_seq"], answer["event_count"], answer["next_from_seq"])
    except (KeyError, TypeError) as exc:
        raise _bad(f"the answer is not an item page: {exc!r}") from None
    # All pages at one height: a page from another block would mix two histories.
    if heights != (header.height, header.height):
        raise Invalid(
            f"page at height {heights[0]} (proof at {heights[1]}), expected {header.height}",
            "proof_mismatch",
        )
    page = verify_item_page_proof(gtin, serial, proof_doc, header.state_root, from_seq)
    _same_view(item_doc, page.item, page.events)
    expected = (from_seq, page.item.event_count, page.next_from_seq)
    if paging != expected:
        raise Invalid(
            f"the node's from_seq, event_count, next_from_seq are {paging}, proven {expected}",
            "proof_mismatch",
        )
    return page


def verify_item_proof(
    gtin: str, serial: str, proof_doc: dict[str, Any], state_root: bytes
) -> tuple[Item, list[ProvenanceEvent]]:
    """``verify_item_page_proof`` of a page that holds the whole history (from event 0 to
    the last): what a history of at most one page proves. Raises ``Invalid``
    (``bad_proof``) for a page that leaves events out."""
    page = verify_item_page_proof(gtin, serial, proof_doc, state_root)
    # Every event the record counts is there.
    if page.next_from_seq is not None:
        raise _bad(f"item has {page.item.event_count} events, the bundle proves {len(page.events)}")
    return page.item, list(page.events)


def verify_item_doc(
    item_doc: dict[str, Any], gtin: str, serial: str, proof_doc: dict[str, Any], state_root: bytes
) -> tuple[Item, list[ProvenanceEvent]]:
    """``verify_item_proof``, and ``item_doc`` (the answer's ``item``) equal to the view
    the proven entries make, field by field: a client that prints the answer prints
    only what is proven. Raises ``Invalid`` (``proof_mismatch``) on any difference."""
    item, events = verify_item_proof(gtin, serial, proof_doc, state_root)
    _same_view(item_doc, item, events)
    return item, events


__all__ = [
    "ItemPage",
    "verify_item_doc",
    "verify_item_page",
    "verify_item_page_proof",
    "verify_item_proof",
]
