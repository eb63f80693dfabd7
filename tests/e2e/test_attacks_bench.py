"""``benches.attacks`` in miniature: every attack of issue 10 against a real four-validator
devnet, with honest transfers during each (``make attacks`` runs the full one and prints
the latency figures; none is asserted here). Nothing the nodes accepted from the honest
client may be lost, every honest transfer must be final, and every attack must get the
nodes' clear refusals (503 ``busy`` among them: load shed on purpose), never a server
error."""

from __future__ import annotations

import asyncio

from benches.attackers import ATTACKS
from benches.attacks import parse_args, run


def test_every_attack_leaves_honest_transfers_final_and_nothing_lost():
    args = parse_args(["--seconds", "3", "--gap-accounts", "20", "--sources", "1", "--drain", "60"])
    phases = asyncio.run(run(args))
    assert [p.name for p in phases] == ["baseline", *ATTACKS]
    for p in phases:
        assert p.sent > 0, p.name
        assert p.final == p.sent and p.lost == 0, p
        assert not p.refused and not p.failed and not p.problems, p
        if p.name == "baseline":
            continue
        attack = p.attack
        assert attack is not None and attack.requests > 0, p.name
        # 503 busy is the node shedding load it was told to bound (an address's share
        # of the request bodies in flight, or of transactions refused by their
        # checks), not a fault.
        faults = [k for k in attack.outcomes if (" 5" in k and "503 busy" not in k) or "error" in k]
        assert not faults, attack
    by_name = {p.name: p.attack.outcomes for p in phases if p.attack is not None}
    assert {"bad_signature", "wrong_chain", "malformed"} <= set(by_name["junk"])
    # Past its address's budget of transactions refused by their checks, the junk is
    # refused unread (``http.refused_txs_per_s``).
    junk_outcomes = {"bad_signature", "wrong_chain", "malformed", "duplicate", "http 503 busy"}
    assert set(by_name["junk"]) <= junk_outcomes
    # Every bomb is refused from its header or size (400 too_large / malformed), or,
    # while the address's other bombs hold its share of the body budget, before it is
    # read (503 busy).
    bombs = by_name["parse_bombs"]
    assert all(": 400 " in k or k.endswith(": 503 busy") for k in bombs), bombs
    assert any(": 400 " in k for k in bombs), bombs
    # One feed over the per-address cap, on every node: closed with 1013, try again later.
    assert by_name["websockets"].get("closed 1013 (per address)", 0) > 0, by_name["websockets"]
    assert by_name["handshakes"]["closed at once (refused)"] > 0, by_name["handshakes"]
    # The gaps and the spender's run are admitted (within their budgets), never an error.
    assert by_name["nonce_gap"].get("accepted", 0) > 0
    assert by_name["spender"].get("accepted", 0) > 0
