import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import (
    InvalidAddress,
    InvalidSignature,
    InvalidTransaction,
    PrivateKey,
    SignDomain,
    TxBody,
    Vote,
    VoteType,
    address_of,
    format_address,
    merkle_root,
    parse_address,
    sign_tx,
    verify,
    verify_tx,
)


@given(st.binary(min_size=20, max_size=20))
def test_address_text_round_trip(raw):
    text = format_address(raw)
    assert text.startswith("ll1")
    assert parse_address(text) == raw
    assert parse_address(text.upper()) == raw


@given(st.binary(min_size=20, max_size=20), st.data())
def test_address_typo_detected(raw, data):
    text = format_address(raw)
    pos = data.draw(st.integers(3, len(text) - 1))
    repl = data.draw(
        st.sampled_from("qpzry9x8gf2tvdw0s3jn54khce6mua7l").filter(lambda c: c != text[pos])
    )
    with pytest.raises(InvalidAddress):
        parse_address(text[:pos] + repl + text[pos + 1 :])


@pytest.mark.parametrize(
    "bad", ["", "ll1", "xx1qqqqqqq", "ll1bbbbbbbbbb", "Ll1qqqqqq", "ll1" + "q" * 80]
)
def test_address_garbage(bad):
    with pytest.raises(InvalidAddress):
        parse_address(bad)


def test_signature_bound_to_domain_and_chain():
    key = PrivateKey.generate()
    sig = key.sign(SignDomain.TX, "chain-a", b"body")
    verify(key.public_key, SignDomain.TX, "chain-a", b"body", sig)
    with pytest.raises(InvalidSignature):
        verify(key.public_key, SignDomain.VOTE, "chain-a", b"body", sig)
    with pytest.raises(InvalidSignature):
        verify(key.public_key, SignDomain.TX, "chain-b", b"body", sig)
    with pytest.raises(InvalidSignature):
        verify(key.public_key, SignDomain.TX, "chain-a", b"bodx", sig)


def test_tx_for_other_chain_and_bad_signature_have_their_own_codes():
    key = PrivateKey.generate()
    tx = sign_tx(key, "chain-a", TxBody(0, 1, 10, "transfer", b""))
    assert verify_tx(tx, "chain-a").nonce == 0
    with pytest.raises(InvalidTransaction) as exc:
        verify_tx(tx, "chain-b")
    assert exc.value.code == "wrong_chain"
    forged = type(tx)(tx.chain_id, tx.sender, tx.body[:-1] + b"\x01", tx.signature)
    with pytest.raises(InvalidSignature) as sig_exc:
        verify_tx(forged, "chain-a")
    assert sig_exc.value.code == "bad_signature"


def test_private_key_never_shows_secret():
    key = PrivateKey.generate()
    assert key.seed.hex() not in repr(key)
    assert key.seed.hex() not in str(key)
    assert address_of(key.public_key) == key.address


def test_vote_round_trip_and_verify():
    key = PrivateKey.generate()
    vote = Vote.create(key, "c", VoteType.PREVOTE, 3, 1, b"\x01" * 32)
    assert Vote.decode(vote.encode()) == vote
    vote.verify("c")
    with pytest.raises(InvalidSignature):
        vote.verify("other")


def test_merkle_root_distinguishes_lists():
    a, b, c = b"a", b"b", b"c"
    roots = {merkle_root(x) for x in ([], [a], [a, b], [b, a], [a, b, c], [a, b, c, c])}
    assert len(roots) == 6
