import pickle

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
    signing_bytes,
    verify,
    verify_tx,
)
from core import types as core_types


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


# bech32m (BIP 350) written out, to spell strings parse_address must refuse though
# their checksum is right.
_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _polymod(values: list[int]) -> int:
    gen = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if (top >> i) & 1 else 0
    return chk


def bech32m(hrp: str, data: list[int]) -> str:
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    poly = _polymod(expanded + data + [0] * 6) ^ 0x2BC830A3
    checksum = [(poly >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[d] for d in data + checksum)


def test_checksummed_strings_of_the_wrong_length_or_padding_are_not_addresses():
    # A 20-byte address is 32 five-bit groups, no padding. A client's string with a
    # right checksum around other data is refused for what it holds.
    assert parse_address(bech32m("ll", [0] * 32)) == bytes(20)
    with pytest.raises(InvalidAddress, match="must hold 20 bytes, got 19"):
        parse_address(bech32m("ll", [0] * 31))  # 155 bits: 19 bytes, 3 zero bits
    with pytest.raises(InvalidAddress, match="invalid padding"):
        parse_address(bech32m("ll", [0] * 30 + [1]))  # those 3 bits not zero
    with pytest.raises(InvalidAddress, match="invalid padding"):
        parse_address(bech32m("ll", [0] * 33))  # 165 bits: a whole group left over
    for bad in (b"ll1qqqq", "ll1" + "q" * 88):
        with pytest.raises(InvalidAddress, match="a string of at most 90 characters"):
            parse_address(bad)  # type: ignore[arg-type]  # deliberately not a str
    for raw in (bytes(19), bytes(21)):
        with pytest.raises(InvalidAddress, match=f"must be 20 bytes, got {len(raw)}"):
            format_address(raw)


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


def test_keys_and_signatures_of_the_wrong_size_are_refused_by_name():
    key = PrivateKey.generate()
    sig = key.sign(SignDomain.TX, "c", b"body")
    for public, signature in ((key.public_key[:31], sig), (key.public_key, sig[:63])):
        with pytest.raises(InvalidSignature, match="wrong size"):
            verify(public, SignDomain.TX, "c", b"body", signature)
    with pytest.raises(ValueError, match="seed must be 32 bytes, got 31"):
        PrivateKey(bytes(31))
    # The chain id's length is one byte of what is signed.
    assert signing_bytes(SignDomain.TX, "c" * 255, b"")[1] == 255
    with pytest.raises(ValueError, match="chain id longer than 255 bytes"):
        key.sign(SignDomain.TX, "é" * 128, b"body")


def test_a_private_key_is_not_picklable():
    # A pickle (a multiprocessing pool's argument, a cache on disk) would hold the seed.
    key = PrivateKey(bytes(range(32)))
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError, match="private keys are not picklable"):
            pickle.dumps(key, protocol)


def test_verified_votes_are_remembered_for_the_next_8192_only(monkeypatch):
    # A precommit checked once is a lookup later; the memory of it is bounded, so the
    # oldest goes once 8,192 newer ones have passed (and is checked again after).
    checked: list[bytes] = []

    def counting(public_key, domain, chain_id, body, signature):
        checked.append(signature)

    monkeypatch.setattr(core_types, "verify", counting)

    def vote(i: int) -> Vote:
        return Vote(VoteType.PRECOMMIT, 7, 0, bytes(32), bytes(32), i.to_bytes(64, "big"))

    first = vote(1 << 500)
    first.verify("cache-test")
    first.verify("cache-test")
    assert len(checked) == 1
    for i in range(8191):
        vote(i).verify("cache-test")
    first.verify("cache-test")
    assert len(checked) == 8192  # still remembered
    vote(8191).verify("cache-test")
    vote(8192).verify("cache-test")
    first.verify("cache-test")
    assert len(checked) == 8195 and checked[-1] == first.signature


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
