"""Hostile use of the staking records: an unbonding release queue filled in one block.

The stakers released at one height used to be one sorted list, one state value: a
block of ~11,900 unbonds from distinct stakers grew it past the state tree's 256 KiB
limit (the write failed with ``state_limit``; before the executor's write check, block
building raised on every proposer), and every unbond re-encoded the whole list. Now
the queue is linked through the stakers' entries and no record grows with it.
"""

from __future__ import annotations

from consensus import GenesisStaking
from consensus.staking import BOND, UNBOND, Bond, Unbond
from consensus.staking_state import UNBONDING_POOL, get_totals
from core import PrivateKey, TxBody, sign_tx
from core.codec import Wire
from genesis import Genesis, GenesisAccount, GenesisValidator
from tests.consensus.staking_helpers import (
    CHAIN,
    FUNDS,
    KEYS,
    PARAMS,
    PUB,
    REGISTRY,
    T0,
    Chain,
    check_invariants,
)
from vm import TRANSFER, Transfer, VerifiedTx
from vm.executor import complete_verified_tx

# Just past what one sorted address list (22 bytes an address) could hold in 256 KiB.
STAKERS = 262_144 // 22 + 1


def _signed(key: PrivateKey, tx_type: str, payload: Wire, nonce: int) -> VerifiedTx:
    """Signed, but not verified again (execution trusts a VerifiedTx): 12k signatures
    checked would double the test's time and test nothing here."""
    body = TxBody(nonce, PARAMS.min_fee, 50, tx_type, payload.encode())
    signed = sign_tx(key, CHAIN, body)
    return complete_verified_tx(signed.encode(), signed, REGISTRY)


def test_an_unbonding_queue_filled_in_one_block_commits_and_pays_out():
    keys = [PrivateKey((i + 1000).to_bytes(32, "big")) for i in range(STAKERS)]
    genesis = Genesis(
        chain_id=CHAIN,
        genesis_time_ms=T0,
        params=PARAMS,
        accounts=(
            *(GenesisAccount(k.address, 1_000) for k in keys),
            GenesisAccount(KEYS[0].address, FUNDS),
        ),
        validators=tuple(GenesisValidator(f"v{i}", PUB[i], 1) for i in range(3)),
        staking=GenesisStaking(1_000),
    )
    chain = Chain(genesis)
    supply = sum(a.balance for a in genesis.accounts) + 3 * 1_000
    bond = chain.block(*(_signed(k, BOND, Bond(500), 0) for k in keys))
    assert all(r.ok for r in bond.receipts)
    # The attack: every staker unbonds in one block, all released at one height; an
    # honest transfer rides in the same block.
    txs = [_signed(k, UNBOND, Unbond(500), 1) for k in keys]
    honest = _signed(KEYS[0], TRANSFER, Transfer(KEYS[1].address, 7), 0)
    result = chain.block(*txs, honest)
    assert [r.code for r in result.receipts if not r.ok] == []
    assert chain.balance(KEYS[1].address) == 7
    assert get_totals(chain.state).unbonding == 500 * STAKERS
    check_invariants(chain.state, supply)
    # No record grew with the queue: every value written stays small (a list re-encoded
    # whole by every unbond made the block quadratic; its time is no test's to assert).
    assert max(len(v) for v in result.changes.values() if v is not None) < 4096
    chain.advance_to(chain.height + PARAMS.unbonding_blocks)
    assert get_totals(chain.state).unbonding == 0
    assert chain.balance(UNBONDING_POOL) == 0
    assert {chain.balance(k.address) for k in keys} == {1_000 - 2 * PARAMS.min_fee}
    check_invariants(chain.state, supply)
    # And the next block still takes an honest transfer.
    after = chain.block(_signed(KEYS[0], TRANSFER, Transfer(KEYS[1].address, 1), 1))
    assert after.receipts[0].ok and chain.balance(KEYS[1].address) == 8
