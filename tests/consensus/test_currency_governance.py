"""Issued currencies: governance grants and revokes the issuer role; the issuer mints and
attests; holders transfer and redeem; conservation holds per currency, whatever is sent."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus import producers_for_height
from consensus.governance import (
    PROPOSE_GRANT_ISSUER,
    PROPOSE_REMOVE_MEMBER,
    PROPOSE_REVOKE_ISSUER,
    VOTE_PROPOSAL,
    ProposeGrantIssuer,
    ProposeRemoveMember,
    ProposeRevokeIssuer,
    VoteProposal,
    get_proposal,
)
from core.codec import UINT64_MAX
from tests.consensus.staking_helpers import ADDR, KEY_OF, KEYS, PARAMS, PUB, Chain, make_genesis
from tests.consensus.staking_helpers import pass_proposal as passed
from vm import (
    Account,
    Event,
    account_key,
    balance_key,
    currency_symbols,
    get_account,
    get_balance,
    get_currency,
)
from vm.currency import (
    ATTEST,
    BURN,
    CURRENCY_TRANSFER,
    MAX_ISSUED_PER_MEMBER,
    MINT,
    Attest,
    Burn,
    CurrencyTransfer,
    Mint,
    check_supply,
)

ISSUER, ALICE, BOB = KEYS[1], KEYS[5], KEYS[6]
REPORT = bytes([0xAB]) * 32


def grant(chain: Chain, symbol: str = "USD", member: int = 1, decimals: int = 2) -> None:
    passed(chain, PROPOSE_GRANT_ISSUER, ProposeGrantIssuer(PUB[member], symbol, decimals))


def fails(chain: Chain, key, tx_type: str, payload, code: str) -> None:
    receipt = chain.run(key, tx_type, payload)
    assert receipt.code == code, (receipt.code, receipt.message)


def conserved(chain: Chain) -> None:
    assert check_supply(chain.state, ADDR) == []


def test_issue_transfer_redeem_and_attest():
    chain = Chain()
    grant(chain)
    usd = get_currency(chain.state, "USD")
    assert (usd.issuer, usd.decimals, usd.revoked, usd.supply) == (ADDR[1], 2, False, 0)
    assert currency_symbols(chain.state) == ("USD",)
    native_before = get_account(chain.state, ADDR[5])

    mint = chain.run(ISSUER, MINT, Mint("USD", ADDR[5], 10_000))
    assert mint.ok and mint.events == (
        Event.of("currency.minted", currency="USD", to=ADDR[5], amount=10_000),
    )
    assert chain.run(ALICE, CURRENCY_TRANSFER, CurrencyTransfer("USD", ADDR[6], 2_500)).ok
    burn = chain.run(BOB, BURN, Burn("USD", 500, b"wire-ref"))
    assert burn.ok and burn.events[0].get("holder") == ADDR[6].hex()
    assert (get_balance(chain.state, ADDR[5], "USD"), get_balance(chain.state, ADDR[6], "USD")) == (
        7_500,
        2_000,
    )
    usd = get_currency(chain.state, "USD")
    assert (usd.minted, usd.burned, usd.supply) == (10_000, 500, 9_500)
    conserved(chain)

    attest = chain.run(ISSUER, ATTEST, Attest("USD", 9_600, REPORT))
    assert attest.ok and attest.events[0].get("supply") == "9500"
    usd = get_currency(chain.state, "USD")
    assert (usd.reserves, usd.report_hash, usd.attested_height) == (9_600, REPORT, chain.height)

    # Fees stay in the native token; the native account record is what it always was,
    # at its old key, and the currency balance is a record of its own.
    alice = get_account(chain.state, ADDR[5])
    assert alice.balance == native_before.balance - PARAMS.min_fee
    assert chain.state[account_key(ADDR[5])] == Account(alice.balance, alice.nonce).encode()
    assert balance_key(ADDR[5], "USD") == bytes([0x02]) + ADDR[5] + b"USD"
    # Spending it all leaves no record behind.
    assert chain.run(BOB, CURRENCY_TRANSFER, CurrencyTransfer("USD", ADDR[5], 2_000)).ok
    assert balance_key(ADDR[6], "USD") not in chain.state
    conserved(chain)


def test_a_hostile_issuer_or_holder_gets_a_receipt_code():
    chain = Chain(make_genesis(params=PARAMS.replace(max_currencies=2)))
    grant(chain)
    # Only the issuer mints and attests; only existing currencies, exactly as spelled.
    fails(chain, ALICE, MINT, Mint("USD", ADDR[5], 1), "not_issuer")
    fails(chain, ALICE, ATTEST, Attest("USD", 1, REPORT), "not_issuer")
    for symbol in ("usd", "USD ", "UЅD", "EUR", ""):
        fails(chain, ISSUER, MINT, Mint(symbol, ADDR[5], 1), "unknown_currency")
        fails(
            chain,
            ALICE,
            CURRENCY_TRANSFER,
            CurrencyTransfer(symbol, ADDR[6], 1),
            "unknown_currency",
        )
    fails(chain, ISSUER, MINT, Mint("USD", ADDR[5], 0), "invalid_amount")
    # The minted total is a u64: it cannot be passed, even across recipients.
    assert chain.run(ISSUER, MINT, Mint("USD", ADDR[5], UINT64_MAX - 5)).ok
    fails(chain, ISSUER, MINT, Mint("USD", ADDR[6], 6), "u64_overflow")
    assert chain.run(ISSUER, MINT, Mint("USD", ADDR[6], 5)).ok
    fails(chain, BOB, CURRENCY_TRANSFER, CurrencyTransfer("USD", ADDR[5], 6), "insufficient_funds")
    fails(chain, BOB, BURN, Burn("USD", 6, b""), "insufficient_funds")
    conserved(chain)

    # Grants: canonical symbols only, no second issuer, members only, bounded count.
    for symbol, code in (
        ("usd", "invalid_symbol"),
        ("Usd", "invalid_symbol"),
        ("U", "invalid_symbol"),
        ("1USD", "invalid_symbol"),
        ("USD-1", "invalid_symbol"),
        ("USD\n", "invalid_symbol"),
        ("UЅD", "invalid_symbol"),
        ("USD", "currency_exists"),
    ):
        fails(chain, KEYS[0], PROPOSE_GRANT_ISSUER, ProposeGrantIssuer(PUB[2], symbol, 2), code)
    fails(
        chain,
        KEYS[0],
        PROPOSE_GRANT_ISSUER,
        ProposeGrantIssuer(PUB[2], "EUR", 19),
        "invalid_decimals",
    )
    fails(
        chain, KEYS[0], PROPOSE_GRANT_ISSUER, ProposeGrantIssuer(PUB[7], "EUR", 2), "unknown_member"
    )
    fails(chain, KEYS[7], PROPOSE_GRANT_ISSUER, ProposeGrantIssuer(PUB[2], "EUR", 2), "not_member")
    grant(chain, "EUR", member=2)
    fails(
        chain,
        KEYS[0],
        PROPOSE_GRANT_ISSUER,
        ProposeGrantIssuer(PUB[2], "CNY", 2),
        "too_many_currencies",
    )
    assert currency_symbols(chain.state) == ("EUR", "USD")


def test_revoked_issuer_mints_nothing_holders_keep_and_a_new_issuer_takes_over():
    chain = Chain()
    grant(chain)
    assert chain.run(ISSUER, MINT, Mint("USD", ADDR[5], 1_000)).ok
    passed(chain, PROPOSE_REVOKE_ISSUER, ProposeRevokeIssuer("USD"))
    assert get_currency(chain.state, "USD").revoked
    fails(chain, ISSUER, MINT, Mint("USD", ADDR[5], 1), "currency_revoked")
    fails(chain, ISSUER, ATTEST, Attest("USD", 1, REPORT), "currency_revoked")
    fails(chain, KEYS[0], PROPOSE_REVOKE_ISSUER, ProposeRevokeIssuer("USD"), "currency_revoked")
    fails(chain, KEYS[0], PROPOSE_REVOKE_ISSUER, ProposeRevokeIssuer("EUR"), "unknown_currency")
    # What is held still moves and is still redeemed.
    assert chain.run(ALICE, CURRENCY_TRANSFER, CurrencyTransfer("USD", ADDR[6], 400)).ok
    assert chain.run(BOB, BURN, Burn("USD", 100, b"")).ok
    # Re-granted with its own decimals only; the supply carries over.
    fails(
        chain,
        KEYS[0],
        PROPOSE_GRANT_ISSUER,
        ProposeGrantIssuer(PUB[2], "USD", 6),
        "invalid_decimals",
    )
    grant(chain, "USD", member=2)
    usd = get_currency(chain.state, "USD")
    assert (usd.issuer, usd.revoked, usd.supply) == (ADDR[2], False, 900)
    fails(chain, ISSUER, MINT, Mint("USD", ADDR[5], 1), "not_issuer")
    assert chain.run(KEYS[2], MINT, Mint("USD", ADDR[5], 1)).ok
    conserved(chain)
    # A removed member issues nothing more.
    passed(chain, PROPOSE_REMOVE_MEMBER, ProposeRemoveMember(PUB[2]))
    assert get_currency(chain.state, "USD").revoked
    fails(chain, KEYS[2], MINT, Mint("USD", ADDR[5], 1), "currency_revoked")


def test_a_member_issues_no_more_currencies_than_its_removal_can_revoke():
    # The vote that removes a member revokes each currency it issues, one event each, in
    # one receipt: 63 of them made that vote emit 65 events, over a receipt's 64, and the
    # block carrying it could not execute. A member issues at most 62.
    params = PARAMS.replace(max_producers=4, max_currencies=64)
    chain = Chain(make_genesis(validators=4, params=params))
    for i in range(MAX_ISSUED_PER_MEMBER - 1):
        grant(chain, f"C{i:02d}", member=3)
    # Two proposals open while it issues 61: both are in bounds when proposed.
    opened = [
        chain.run(KEYS[0], PROPOSE_GRANT_ISSUER, ProposeGrantIssuer(PUB[3], symbol, 2))
        for symbol in ("LAST", "OVER")
    ]
    assert all(r.ok for r in opened), opened
    last, over = (int(r.events[0].get("proposal_id")) for r in opened)
    receipts = {}
    for pid in (last, over):
        for key in producers_for_height(chain.state, chain.height + 1).keys:
            receipts[pid] = chain.run(KEY_OF[key], VOTE_PROPOSAL, VoteProposal(pid))
            if not receipts[pid].ok or get_proposal(chain.state, pid).passed_height:
                break
    # The first passes; the second is checked again when it would pass, and refused.
    assert get_currency(chain.state, "LAST").issuer == ADDR[3]
    assert (receipts[over].code, receipts[over].message) == (
        "too_many_currencies",
        f"a member issues at most 62 currencies, {ADDR[3].hex()} issues 62",
    )
    assert get_currency(chain.state, "OVER") is None
    fails(
        chain,
        KEYS[0],
        PROPOSE_GRANT_ISSUER,
        ProposeGrantIssuer(PUB[3], "MORE", 2),
        "too_many_currencies",
    )
    # Another member still may (the chain's own cap is 64).
    grant(chain, "OTHER", member=2)
    # The removal revokes all 62 in one receipt of 64 events.
    passed(chain, PROPOSE_REMOVE_MEMBER, ProposeRemoveMember(PUB[3]))
    events = chain.last.receipts[0].events
    assert len(events) == 64
    assert sum(e.kind == "issuer_revoked" for e in events) == MAX_ISSUED_PER_MEMBER
    assert not get_currency(chain.state, "OTHER").revoked


ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["mint", "transfer", "burn"]),
        st.sampled_from([5, 6, 7]),
        st.sampled_from([5, 6, 7]),
        st.sampled_from(["USD", "EUR"]),
        st.one_of(st.integers(0, 3_000), st.just(UINT64_MAX)),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ACTIONS)
def test_conservation_per_currency_whatever_is_sent(actions):
    chain = Chain()
    grant(chain, "USD", member=1)
    grant(chain, "EUR", member=2)
    issuer = {"USD": KEYS[1], "EUR": KEYS[2]}
    for kind, a, b, symbol, amount in actions:
        if kind == "mint":
            tx = chain.tx(issuer[symbol], MINT, Mint(symbol, ADDR[b], amount))
        elif kind == "transfer":
            tx = chain.tx(KEYS[a], CURRENCY_TRANSFER, CurrencyTransfer(symbol, ADDR[b], amount))
        else:
            tx = chain.tx(KEYS[a], BURN, Burn(symbol, amount, b""))
        chain.block(tx)  # every failure is a receipt code the type declares (the helper)
        conserved(chain)
        for symbol in ("USD", "EUR"):
            held = sum(get_balance(chain.state, x, symbol) for x in ADDR)
            assert held == get_currency(chain.state, symbol).supply <= UINT64_MAX
