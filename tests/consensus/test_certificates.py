"""Header checks and commit certificates: every refusal of ``validate_header`` and
``verify_commit``, each with the honest header or certificate beside it.

These two functions are what a node, an offline audit and the CLI's light client
trust a block by; a check that silently stopped firing (a producer's block under
another chain id, a certificate of one producer's signature three times) would let a
forged chain through every one of them.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import ValidatorSet, make_commit, validate_header, verify_commit
from core import Commit, CommitSig, InvalidBlock, PrivateKey
from tests.consensus.helpers import (
    CHAIN,
    GENESIS_HASH,
    GENESIS_TIME,
    KEYS,
    VALIDATORS,
    ToyApp,
    make_block,
    proposer,
)

OUTSIDER = PrivateKey(b"\x77" * 32)


def _chain_of_two() -> tuple[ToyApp, Commit]:
    """Blocks 1 and 2 of a toy chain; block 1's certificate (signed by three of four)
    travels in block 2's header."""
    app = ToyApp()
    first = make_block(app, 1, 0, proposer(1, 0))
    app.blocks.append(first)
    commit = make_commit(KEYS[:3], CHAIN, 1, 0, first.hash)
    app.commits.append(commit)
    app.blocks.append(make_block(app, 2, 0, proposer(2, 0)))
    return app, commit


def _check(header, prev, *, validators=VALIDATORS, prev_validators=None) -> None:
    validate_header(
        header,
        chain_id=CHAIN,
        prev=prev,
        genesis_hash=GENESIS_HASH,
        genesis_time_ms=GENESIS_TIME,
        validators=validators,
        prev_validators=prev_validators,
    )


def test_honest_headers_pass():
    app, _ = _chain_of_two()
    first, second = (b.header for b in app.blocks)
    _check(first, None)
    _check(second, first)


@pytest.mark.parametrize(
    ("changes", "refusal"),
    [
        ({"chain_id": "another-chain"}, "chain id 'another-chain', expected 'bft-test'"),
        ({"height": 3}, "block height 3, expected 2"),
        ({"prev_hash": b"\x01" * 32}, "prev hash 0101"),
        # Time must move forward: the parent's own time is refused, as is any earlier.
        ({"time_ms": "parent"}, "expected after"),
        ({"time_ms": GENESIS_TIME}, "expected after"),
        ({"producer_set_hash": b"\x02" * 32}, "producer set 0202"),
        ({"round": 1}, "round 1: producer"),
        ({"producer": "next"}, "expected " + VALIDATORS.proposer(2, 0).hex()),
        ({"last_commit": None}, "missing commit of height 1"),
    ],
)
def test_each_header_field_is_checked(changes, refusal):
    app, _ = _chain_of_two()
    first, second = (b.header for b in app.blocks)
    if changes.get("time_ms") == "parent":
        changes = {"time_ms": first.time_ms}
    if changes.get("producer") == "next":
        changes = {"producer": VALIDATORS.proposer(2, 1)}
    with pytest.raises(InvalidBlock, match=refusal):
        _check(dataclasses.replace(second, **changes), first)


def test_the_first_block_carries_no_certificate_and_links_to_genesis():
    app, commit = _chain_of_two()
    first = app.blocks[0].header
    with pytest.raises(InvalidBlock, match="height 1 must not carry a previous commit"):
        _check(dataclasses.replace(first, last_commit=commit), None)
    with pytest.raises(InvalidBlock, match="prev hash"):
        _check(dataclasses.replace(first, prev_hash=app.blocks[1].header.hash), None)
    with pytest.raises(InvalidBlock, match=f"expected after {GENESIS_TIME} ms"):
        _check(dataclasses.replace(first, time_ms=GENESIS_TIME), None)


def test_the_carried_certificate_must_finalize_the_parent():
    app, _ = _chain_of_two()
    first, second = (b.header for b in app.blocks)
    other = make_commit(KEYS[:3], CHAIN, 1, 0, b"\x03" * 32)
    with pytest.raises(InvalidBlock, match="commit is for block 0303"):
        _check(dataclasses.replace(second, last_commit=other), first)


def test_across_an_epoch_the_parent_certificate_is_checked_under_the_parent_set():
    # Block 2 is made under a new set (the three-key set below); block 1's certificate
    # was signed by the old one, and only the old one can make it count.
    app, _ = _chain_of_two()
    first, second = (b.header for b in app.blocks)
    new_set = ValidatorSet.of([KEYS[3].public_key, OUTSIDER.public_key, KEYS[2].public_key])
    header = dataclasses.replace(
        second, producer_set_hash=new_set.hash, producer=new_set.proposer(2, 0)
    )
    _check(header, first, validators=new_set, prev_validators=VALIDATORS)
    with pytest.raises(InvalidBlock, match="non-producer"):
        _check(header, first, validators=new_set)


def _certificate(signers, block_hash=b"\xaa" * 32, height=5, round_=2) -> Commit:
    return make_commit(signers, CHAIN, height, round_, block_hash)


def test_an_honest_certificate_verifies():
    verify_commit(_certificate(KEYS[:3]), CHAIN, 5, b"\xaa" * 32, VALIDATORS)
    verify_commit(_certificate(KEYS), CHAIN, 5, b"\xaa" * 32, VALIDATORS)


def test_a_certificate_for_another_height_or_block_is_refused():
    commit = _certificate(KEYS[:3])
    with pytest.raises(InvalidBlock, match="commit is for height 5, expected 6"):
        verify_commit(commit, CHAIN, 6, b"\xaa" * 32, VALIDATORS)
    with pytest.raises(InvalidBlock, match="commit is for block aaaa"):
        verify_commit(commit, CHAIN, 5, b"\xbb" * 32, VALIDATORS)


def test_one_producer_signing_twice_is_not_two_precommits():
    # Two producers' signatures and a copy of one of them: three entries, two voters,
    # one short of the quorum of four. Counting entries would finalize on two.
    honest = _certificate(KEYS[:2])
    copied = (*honest.signatures, honest.signatures[1])
    forged = dataclasses.replace(honest, signatures=copied)
    with pytest.raises(InvalidBlock, match="unique and sorted"):
        verify_commit(forged, CHAIN, 5, b"\xaa" * 32, VALIDATORS)


def test_signers_out_of_order_are_refused():
    # One certificate has one encoding: the same signatures in another order are refused.
    honest = _certificate(KEYS[:3])
    shuffled = dataclasses.replace(honest, signatures=honest.signatures[::-1])
    with pytest.raises(InvalidBlock, match="unique and sorted"):
        verify_commit(shuffled, CHAIN, 5, b"\xaa" * 32, VALIDATORS)


def test_a_signature_that_does_not_verify_is_refused():
    honest = _certificate(KEYS[:3])
    # Another block's precommit under a producer's name.
    elsewhere = _certificate(KEYS[:3], block_hash=b"\xbb" * 32)
    swapped = (honest.signatures[0], elsewhere.signatures[1], honest.signatures[2])
    forged = dataclasses.replace(honest, signatures=swapped)
    with pytest.raises(
        InvalidBlock, match="bad precommit signature from " + KEYS[1].public_key.hex()
    ):
        verify_commit(forged, CHAIN, 5, b"\xaa" * 32, VALIDATORS)
    # The round is signed too: the same signatures under another round do not verify.
    with pytest.raises(InvalidBlock, match="bad precommit signature"):
        verify_commit(dataclasses.replace(honest, round=3), CHAIN, 5, b"\xaa" * 32, VALIDATORS)
    # So is the chain id.
    with pytest.raises(InvalidBlock, match="bad precommit signature"):
        verify_commit(honest, "another-chain", 5, b"\xaa" * 32, VALIDATORS)


def test_an_outsider_signature_is_refused_even_beside_a_quorum():
    signers = [*KEYS[:3], OUTSIDER]
    with pytest.raises(InvalidBlock, match="non-producer " + OUTSIDER.public_key.hex()):
        verify_commit(_certificate(signers), CHAIN, 5, b"\xaa" * 32, VALIDATORS)


@settings(max_examples=60, deadline=None)
@given(
    picks=st.lists(st.integers(0, len(KEYS)), min_size=0, max_size=7),
    forge=st.one_of(st.none(), st.integers(0, 6)),
)
def test_a_certificate_verifies_exactly_when_a_quorum_of_distinct_producers_signed(picks, forge):
    # Entries drawn from the four producers and an outsider (index 4), repeats allowed,
    # in canonical order; ``forge`` replaces one entry's signature with another block's.
    pool = [*KEYS, OUTSIDER]
    block_hash = b"\xaa" * 32
    entries = []
    for i in sorted(picks, key=lambda i: pool[i].public_key):
        entries.append(_certificate([pool[i]], block_hash).signatures[0])
    forged = forge is not None and forge < len(entries)
    if forged:
        other = _certificate([pool[picks[0]]], b"\xbb" * 32).signatures[0]
        victim = entries[forge]
        entries[forge] = CommitSig(victim.validator, other.signature)
    commit = Commit(5, 2, block_hash, tuple(entries))
    validators = [e.validator for e in entries]
    honest = (
        validators == sorted(set(validators))
        and OUTSIDER.public_key not in validators
        and len(validators) >= VALIDATORS.quorum
        and not forged
    )
    if honest:
        verify_commit(commit, CHAIN, 5, block_hash, VALIDATORS)
    else:
        with pytest.raises(InvalidBlock):
            verify_commit(commit, CHAIN, 5, block_hash, VALIDATORS)
