"""Issue 10, the nonce-gap flood: hundreds of funded accounts send nonces n+1..n+63 (n never
comes) to every node over HTTP; an honest client's transfer is still admitted and final.

On main before the pending/queued split the gaps filled every node's admission window
(two blocks' worth) and the honest client got ``mempool_full``.
"""

from __future__ import annotations

import dataclasses
import json
import time

from core import PrivateKey, TxBody, sign_tx
from core.types import tx_hash
from genesis import create_localnet
from tests.e2e.helpers import Cluster, Signer, faucet_key, http_json, submit, wait_tx
from vm import ChainParams, Transfer

VALIDATORS = 4
ATTACKERS = 300
GAP = 63
# A small window (2 x 2,000 pending transactions) so that the flood, ~19,000
# transactions, is far more than it.
PARAMS = dataclasses.replace(ChainParams(), max_block_txs=2_000)


def post_batch(url: str, raws: list[bytes]) -> list[str]:
    doc = http_json(f"{url}/v1/txs", json.dumps({"txs": [r.hex() for r in raws]}).encode())
    assert "results" in doc, doc
    return [r["code"] for r in doc["results"]]


def test_a_nonce_gap_flood_does_not_keep_an_honest_transfer_out(tmp_path):
    layout = create_localnet(tmp_path / "net", VALIDATORS, "", block_interval_ms=500, params=PARAMS)
    homes = [n.home for n in layout.nodes]
    chain_id = layout.chain_id
    with Cluster(homes) as net:
        net.start()
        net.wait_height(2, timeout=60)
        urls = [n.url for n in net.nodes]

        # Fund the attackers and an honest client.
        faucet = Signer(faucet_key(layout.dir), chain_id)
        faucet.sync_nonce(urls[0])
        attackers = [PrivateKey.generate() for _ in range(ATTACKERS)]
        honest = Signer(PrivateKey.generate(), chain_id)
        funded = [k.address for k in attackers] + [honest.key.address]
        # One sender may run at most 64 nonces ahead of the chain: 60 a block.
        for i in range(0, len(funded), 60):
            funding = [faucet.transfer(a, 10**9) for a in funded[i : i + 60]]
            assert set(post_batch(urls[0], funding)) == {"accepted"}
            wait_tx(urls[0], tx_hash(funding[-1]).hex(), timeout=60)

        # The flood: nonces 1..63 of every attacker (nonce 0 never comes), to every node.
        flood = [
            sign_tx(
                k, chain_id, TxBody(n, 1_000, 3_000, "transfer", Transfer(bytes(20), 1).encode())
            ).encode()
            for k in attackers
            for n in range(1, GAP + 1)
        ]
        codes: dict[str, int] = {}
        for i in range(0, len(flood), 1_000):
            for url in urls:
                for code in post_batch(url, flood[i : i + 1_000]):
                    codes[code] = codes.get(code, 0) + 1
        print(f"flood of {len(flood)} gapped transactions to each of {len(urls)} nodes: {codes}")
        # Gaps never count against the window: no node calls itself full.
        assert "mempool_full" not in codes

        # An honest transfer, to each node in turn, is admitted and becomes final.
        dest = PrivateKey.generate().address
        for url in urls:
            started = time.monotonic()
            tx = submit(url, honest.transfer(dest, 7))
            doc = wait_tx(url, tx, timeout=30)
            took = time.monotonic() - started
            print(f"honest transfer via {url}: final at height {doc['height']} in {took:.2f} s")
            assert doc["receipt"]["code"] == "ok"

        # A gapped transaction says what it waits for, or why it was dropped.
        status = http_json(f"{urls[1]}/v1/txs/{tx_hash(flood[0]).hex()}")
        assert status["status"] in ("queued", "dropped"), status
        assert status["code"] in ("nonce_gap", "evicted"), status
        # The chain kept going with everyone agreeing.
        net.wait_height(max(net.heights()) + 2, timeout=30)
        assert all(n.alive for n in net.nodes)
