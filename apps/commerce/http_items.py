"""An item's provenance over HTTP: ``GET /v1/items/01/{gtin}/21/{serial}``, the item
with a page of its EPCIS-shaped history and the state proof of every entry.

Declared in ``ROUTES`` (``apps.routes``) as the other commerce reads are;
``apps.commerce.http`` takes them into its table between the orders and the feeds
(``RouteTable.include``), where they are mounted and documented. A client checks a
page with ``apps.commerce.item_proofs``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from apps.commerce import views
from apps.commerce.http_common import (
    MAX_ID,
    UNAVAILABLE,
    ChainReader,
    StateAt,
    at_height,
    doc_at,
    final_height,
    in_thread,
    not_found,
    reader_of,
)
from apps.commerce.provenance import valid_gtin
from apps.routes import (
    HASH,
    UINT,
    Answer,
    Component,
    IntParam,
    Param,
    Refusal,
    RouteTable,
    array,
    described,
    nullable,
    obj,
    ref,
)
from core.errors import HttpError

# Listed among the commerce components (``apps.commerce.http.ROUTES``), in the order the
# document has always had.
ITEM_PROOF = Component(
    "ItemProof",
    obj(
        {
            "height": UINT,
            "state_root": HASH,
            "header": described(nullable(ref("Hex")), "the encoded BlockHeader at `height`"),
            "commit": described(nullable(ref("Hex")), "its encoded commit certificate"),
            "entries": array(
                obj(
                    {
                        "key": ref("Hex"),
                        "value": nullable(ref("Hex")),
                        "proof": described(ref("Hex"), "encoded StateProof"),
                    }
                )
            ),
        },
        description="The item record, then each provenance event of the page, each with "
        "its state proof at `height`; check with `apps.commerce.item_proofs.verify_item_page`.",
    ),
)
ROUTES = RouteTable("commerce")

# Events a page of an item's history holds at most (and by default). Each comes with
# its state proof (~3.2 KB of JSON and ~10 KB of memory while the page is built), and a
# custodian can lengthen a history at a fee per event (hand-offs to a second account
# need no role): so a request reads the item's record and one page of events, never
# the whole history, and costs the same at ten events or a million. 256 holds a
# supply chain's history (tens of events) in one page, and is a quarter of what one
# answer held before histories came in pages (1,024 events).
MAX_ITEM_PAGE = 256

ITEM_FROM_SEQ = IntParam(
    "from_seq",
    "query",
    0,
    2**32 - 1,
    "seq of the page's first event: 0, then the previous page's `next_from_seq`",
    default=0,
)
ITEM_LIMIT = IntParam(
    "limit", "query", 1, MAX_ITEM_PAGE, "events in the page at most", default=MAX_ITEM_PAGE
)
# Optional: without it, the latest final height (IntParam.read takes no default of
# "whatever is final now").
ITEM_HEIGHT = IntParam(
    "height",
    "query",
    1,
    MAX_ID,
    "final height to read at (default: the latest): every page after the first asks for "
    "the first page's `height`, so the pages prove one history",
)


def _item_page(
    state: StateAt, gtin: str, serial: str, from_seq: int, limit: int
) -> dict[str, Any] | None:
    item = views.get_item(state, gtin, serial)
    if item is None:
        return None
    # Seq 0 is always asked for (a history starts with its commissioning); past it, a
    # start beyond the last event is a client's mistake, not an empty page.
    if from_seq and from_seq >= item.event_count:
        raise HttpError(
            400,
            "bad_param",
            f"from_seq must be below the item's {item.event_count} events at height "
            f"{state.height}, got {from_seq}",
        )
    # Only this page's events are read and proven: the work is bounded by `limit`.
    events = views.item_history(state, gtin, serial, from_seq, limit)
    view = views.item_view_of(item, events)
    # Exactly the keys behind the page (the item, then each of its events), each with its
    # value and proof at this height: the client rebuilds the page from them.
    entries = []
    for key in views.item_state_keys(state, gtin, serial, from_seq, limit):
        state.get(key)
        value, proof = state.proofs[key]
        entries.append(
            {
                "key": key.hex(),
                "value": None if value is None else value.hex(),
                "proof": proof.encode().hex(),
            }
        )
    end = from_seq + len(events)
    return {
        "item": views.jsonable(view),
        "entries": entries,
        "event_count": item.event_count,
        "next_from_seq": end if end < item.event_count else None,
    }


def _item_bundle(
    reader: ChainReader, state: StateAt, gtin: str, serial: str, from_seq: int, limit: int
) -> dict[str, Any] | None:
    """``_item_page`` with the header and commit of ``state``'s height: one read."""
    page = _item_page(state, gtin, serial, from_seq, limit)
    if page is None:
        return None
    return {**page, "header": reader.header(state.height), "commit": reader.commit(state.height)}


@ROUTES.get(
    "/v1/items/01/{gtin}/21/{serial}",
    "getItem",
    "An item's provenance with a state proof, a page at a time",
    "The path is GS1 Digital Link's (`/01/<gtin>/21/<serial>`). The answer holds "
    "the item with a page of its EPCIS-shaped history (`limit` events from seq "
    "`from_seq`) and a proof bundle: with the genesis document a client verifies it "
    "offline (the commit finalizes the header, whose state root proves every entry). "
    "Every page proves the item's record (custodian, owner, `event_count`); the "
    "first page is answered at the latest final height, and a client asks for each "
    "next page (`from_seq=next_from_seq`) at that `height`, so all pages prove one "
    f"history. A history of at most {MAX_ITEM_PAGE} events is one page.",
    params=(
        Param("gtin", "path", {"type": "string", "pattern": "^[0-9]{14}$"}, "GTIN-14"),
        Param(
            "serial", "path", {"type": "string", "minLength": 1, "maxLength": 20}, "serial number"
        ),
        ITEM_FROM_SEQ,
        ITEM_LIMIT,
        ITEM_HEIGHT,
    ),
    ok=Answer(
        "The item with a page of its history (`item.history`: the page's events), and "
        "the page's proof.",
        at_height(
            item=views.ItemView,
            proof=ITEM_PROOF,
            from_seq=described(UINT, "seq of the page's first event"),
            event_count=described(UINT, "events in the whole history at `height`"),
            next_from_seq=described(
                nullable(UINT), "`from_seq` of the next page (at this `height`); null at the end"
            ),
        ),
    ),
    errors=(
        Refusal(
            400,
            "A bad GTIN or serial, or a parameter out of range: `from_seq` past the last "
            f"event, `limit` not in 1..{MAX_ITEM_PAGE}, a `height` that is not a number.",
            "invalid_gtin",
            "invalid_serial",
            "bad_param",
        ),
        Refusal(
            404, "No such item at the height read, or a height above the final one.", "not_found"
        ),
        Refusal(410, "A height whose state this node no longer keeps (pruning).", "pruned"),
        UNAVAILABLE,
    ),
)
async def get_item(request: web.Request) -> web.Response:
    """A page of an item's history with a state proof: what a code on the package
    resolves to.

    The path is GS1 Digital Link's (``/01/<gtin>/21/<serial>``), so a printed
    link's path maps onto it as is.
    """
    reader = reader_of(request)
    gtin, serial = request.match_info["gtin"], request.match_info["serial"]
    if not valid_gtin(gtin):
        raise HttpError(
            400, "invalid_gtin", f"GTIN must be 14 digits with a valid check digit, got {gtin!r}"
        )
    # The registering transaction checks the character set; an unknown serial is a 404.
    if not 1 <= len(serial) <= 20:
        raise HttpError(
            400, "invalid_serial", f"serial must be 1..20 characters, got {len(serial)}"
        )
    from_seq, limit = ITEM_FROM_SEQ.read(request), ITEM_LIMIT.read(request)
    final = final_height(reader)
    height = ITEM_HEIGHT.read(request) if ITEM_HEIGHT.name in request.query else final
    if height > final:
        raise HttpError(404, "not_found", f"height {height} is above the final height {final}")
    # A height below what the node keeps is refused by the state reads (410 `pruned`).
    state = StateAt(reader, height)
    # The header and commit too: at an old height they are read from the whole stored
    # block (up to 8 MiB), never on the event loop.
    page = await in_thread(request, _item_bundle, reader, state, gtin, serial, from_seq, limit)
    if page is None:
        raise not_found(f"item (01){gtin}(21){serial}", state.height)
    header, commit = page["header"], page["commit"]
    assert state.root is not None
    proof = {
        "height": state.height,
        "state_root": state.root.hex(),
        # The finalized header and its certificate: with the genesis document a
        # client checks the whole bundle offline.
        "header": None if header is None else header.encode().hex(),
        "commit": None if commit is None else commit.encode().hex(),
        "entries": page["entries"],
    }
    return doc_at(
        state,
        item=page["item"],
        proof=proof,
        from_seq=from_seq,
        event_count=page["event_count"],
        next_from_seq=page["next_from_seq"],
    )


__all__ = ["ITEM_FROM_SEQ", "ITEM_HEIGHT", "ITEM_LIMIT", "ITEM_PROOF", "MAX_ITEM_PAGE", "ROUTES"]
