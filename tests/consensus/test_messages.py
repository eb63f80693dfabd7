"""Wire messages: signatures over what they name, strict round trips, the envelope."""

from __future__ import annotations

import pytest

from consensus import make_commit
from consensus.messages import (
    ConsensusMessage,
    EncodedFinalizedBlock,
    FinalizedBlock,
    Proposal,
    SyncRequest,
    encode_message,
    proposal_signing_body,
)
from core import DecodeError, InvalidSignature, VoteType
from tests.consensus.helpers import CHAIN, KEYS, ME, ToyApp, make_block, sign_proposal, vote


def block():
    return make_block(ToyApp(), 1, 0, KEYS[1])


def test_proposal_verifies_and_round_trips():
    p = sign_proposal(KEYS[1], 1, 0, block())
    p.verify(CHAIN)
    assert Proposal.decode(p.encode()) == p
    assert p.pol == -1 and p.block_hash == p.block.hash


def test_proposal_signature_covers_block_round_pol_and_chain():
    b = block()
    p = sign_proposal(KEYS[1], 1, 2, b, pol_round=1)
    other = make_block(ToyApp(), 1, 0, KEYS[1], salt=1)
    for tampered in (
        Proposal(1, 2, 1, other, p.proposer, p.signature),
        Proposal(1, 3, 1, b, p.proposer, p.signature),
        Proposal(1, 2, 0, b, p.proposer, p.signature),
        Proposal(1, 2, None, b, p.proposer, p.signature),
    ):
        with pytest.raises(InvalidSignature):
            tampered.verify(CHAIN)
    with pytest.raises(InvalidSignature):
        p.verify("another-chain")


def test_no_pol_and_pol_zero_sign_differently():
    h = b"\x01" * 32
    assert proposal_signing_body(1, 1, None, h) != proposal_signing_body(1, 1, 0, h)


def test_pol_round_must_precede_round():
    b = block()
    with pytest.raises(DecodeError):
        Proposal(1, 1, 1, b, ME.public_key, b"\x00" * 64)


@pytest.mark.parametrize(
    "msg",
    [
        sign_proposal(KEYS[1], 1, 0, make_block(ToyApp(), 1, 0, KEYS[1])),
        vote(KEYS[2], VoteType.PRECOMMIT, 3, 1, b"\x02" * 32),
        vote(KEYS[2], VoteType.PREVOTE, 3, 1, b""),
        FinalizedBlock(
            make_block(ToyApp(), 1, 0, KEYS[1]),
            make_commit(KEYS[1:], CHAIN, 1, 0, make_block(ToyApp(), 1, 0, KEYS[1]).hash),
            4,
        ),
        SyncRequest(7, b""),
        SyncRequest(7, b"\x03" * 32),
    ],
    ids=["proposal", "precommit", "nil-prevote", "finalized", "sync", "sync-block"],
)
def test_envelope_round_trips_each_kind(msg):
    env = ConsensusMessage.wrap(msg)
    data = env.encode()
    assert ConsensusMessage.decode(data).unwrap() == msg
    assert ConsensusMessage.decode(data).encode() == data


def test_envelope_carries_exactly_one_payload():
    with pytest.raises(DecodeError):
        ConsensusMessage()
    with pytest.raises(DecodeError):
        ConsensusMessage(sync_request=SyncRequest(1, b""), vote=vote(KEYS[0], 1, 1, 0, b""))
    raw = ConsensusMessage(sync_request=SyncRequest(1, b"")).to_raw()
    raw[0] = raw[3]
    from core import pack_raw

    with pytest.raises(DecodeError):
        ConsensusMessage.decode(pack_raw(raw))
    with pytest.raises(TypeError):
        ConsensusMessage.wrap("not a message")  # type: ignore[arg-type]  # deliberately the wrong type


@pytest.mark.parametrize("txs", [0, 1, 15, 16, 70_000])
@pytest.mark.parametrize("latest", [0, 1, 127, 128, 2**16, 2**32, 2**64 - 1])
def test_a_finalized_block_sent_as_stored_is_the_bytes_the_old_encoder_made(txs, latest):
    # A peer on older code decodes our answers as before: a stored block and certificate
    # put in the envelope as they are make exactly what encoding the decoded ones made
    # (array headers of every size: txs past 15 and 65,535, latest of every int form).
    b = make_block(ToyApp(), 1, 0, KEYS[1], txs=tuple(i.to_bytes(3, "big") for i in range(txs)))
    commit = make_commit(KEYS[:3], CHAIN, 1, 0, b.hash)
    sent = encode_message(EncodedFinalizedBlock(b.encode(), commit.encode(), latest))
    assert sent == ConsensusMessage.wrap(FinalizedBlock(b, commit, latest)).encode()
    assert EncodedFinalizedBlock(b.encode(), commit.encode(), latest).encode() == (
        FinalizedBlock(b, commit, latest).encode()
    )
    assert ConsensusMessage.decode(sent).unwrap() == FinalizedBlock(b, commit, latest)
