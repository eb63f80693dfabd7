"""Stateless verification and mempool admission: one test per error code."""

import pytest

from core.codec import pack_raw
from core.errors import DecodeError, Invalid, InvalidSignature, InvalidTransaction
from core.keys import SignDomain
from core.types import SignedTx, TxBody, tx_hash
from tests.vm.helpers import CHAIN, KEYS, PARAMS, REGISTRY, funded, signed, transfer
from vm import Executor, Transfer, verify_signed_tx

TO = KEYS[1].address
EXECUTOR = Executor(REGISTRY)


def verify(raw, chain=CHAIN, max_tx_bytes=PARAMS.max_tx_bytes):
    return verify_signed_tx(raw, chain, REGISTRY, max_tx_bytes)


def code_of(fn, *args, **kwargs):
    with pytest.raises(Invalid) as exc:
        fn(*args, **kwargs)
    return exc.value.code


# --- stateless ---


def test_a_valid_transfer_verifies():
    raw = signed(KEYS[0], 3, Transfer(TO, 5), fee=11, expiry=7)
    vtx = verify(raw)
    assert vtx.payload == Transfer(TO, 5)
    assert (vtx.body.nonce, vtx.body.fee, vtx.body.expiry_height) == (3, 11, 7)
    assert vtx.hash == tx_hash(raw) == vtx.tx.hash
    assert vtx.size == len(raw)
    assert vtx.sender_address == KEYS[0].address
    # What its handler sees as the TxInfo.
    assert (vtx.sender, vtx.nonce, vtx.fee) == (KEYS[0].public_key, 3, 11)


def test_too_large():
    raw = signed(KEYS[0], 0, Transfer(TO, 5))
    assert code_of(verify, raw, max_tx_bytes=len(raw) - 1) == "too_large"
    verify(raw, max_tx_bytes=len(raw))


def test_malformed_envelope():
    raw = signed(KEYS[0], 0, Transfer(TO, 5))
    assert code_of(verify, raw + b"\x00") == "malformed"
    assert code_of(verify, b"\x94\x01") == "malformed"
    with pytest.raises(DecodeError):
        verify(raw[:-1])


def test_wrong_chain():
    raw = signed(KEYS[0], 0, Transfer(TO, 5), chain="other-chain")
    assert code_of(verify, raw) == "wrong_chain"


def test_bad_signature():
    tx = SignedTx.decode(signed(KEYS[0], 0, Transfer(TO, 5)))
    forged = SignedTx(tx.chain_id, KEYS[1].public_key, tx.body, tx.signature)
    with pytest.raises(InvalidSignature) as exc:
        verify(forged.encode())
    assert exc.value.code == "bad_signature"


def test_malformed_body_is_refused_after_the_signature_checks():
    body = pack_raw([0, 10, 50, "transfer"])  # four fields instead of five
    sig = KEYS[0].sign(SignDomain.TX, CHAIN, body)
    raw = SignedTx(CHAIN, KEYS[0].public_key, body, sig).encode()
    assert code_of(verify, raw) == "malformed"


def test_unknown_type():
    raw = signed(KEYS[0], 0, Transfer(TO, 5), tx_type="mint")
    assert code_of(verify, raw) == "unknown_type"


def test_malformed_payload():
    raw = signed(KEYS[0], 0, pack_raw([TO, 5, 6]))
    assert code_of(verify, raw) == "malformed"


# --- admission (latest committed height 10, so the tx would go into block 11) ---


def admit(vtx, state, height=10, params=PARAMS, **kw):
    EXECUTOR.check_admission(state, vtx, height, params, **kw)


def test_admission_accepts_a_good_tx_and_a_nonce_gap():
    state = funded(1_000, nonces=(4,))
    admit(transfer(KEYS[0], 4, TO, 5, expiry=11), state)
    # Gaps are the mempool's to queue.
    admit(transfer(KEYS[0], 9, TO, 5, expiry=110), state)


def test_expired():
    state = funded(1_000)
    assert code_of(admit, transfer(KEYS[0], 0, TO, 5, expiry=10), state) == "expired"


def test_expiry_too_far_ahead():
    state = funded(1_000)
    vtx = transfer(KEYS[0], 0, TO, 5, expiry=11 + PARAMS.max_expiry_blocks + 1)
    with pytest.raises(InvalidTransaction, match="more than 100 blocks past") as exc:
        admit(vtx, state)
    assert exc.value.code == "expired"


def test_fee_too_low():
    vtx = transfer(KEYS[0], 0, TO, 5, fee=PARAMS.min_fee - 1)
    with pytest.raises(InvalidTransaction, match="fee 9 is below the minimum fee 10") as exc:
        admit(vtx, funded(1_000))
    assert exc.value.code == "fee_too_low"


def test_nonce_too_low():
    state = funded(1_000, nonces=(5,))
    with pytest.raises(InvalidTransaction, match="expected nonce 5 or higher, got 4") as exc:
        admit(transfer(KEYS[0], 4, TO, 5), state)
    assert exc.value.code == "nonce_too_low"


def test_expected_nonce_replaces_the_state_nonce():
    state = funded(1_000, nonces=(5,))
    vtx = transfer(KEYS[0], 6, TO, 5)
    assert code_of(admit, vtx, state, expected_nonce=7) == "nonce_too_low"
    admit(vtx, state, expected_nonce=6)


def test_insufficient_fee():
    with pytest.raises(InvalidTransaction, match="balance 9 does not cover the fee 10") as exc:
        admit(transfer(KEYS[0], 0, TO, 5, fee=10), funded(9))
    assert exc.value.code == "insufficient_fee"
    # An account that does not exist has nothing to pay with.
    assert code_of(admit, transfer(KEYS[2], 0, TO, 5), funded(1_000)) == "insufficient_fee"


def test_an_executor_runs_the_registry_it_was_given():
    assert EXECUTOR.registry is REGISTRY


def test_admission_refuses_a_type_this_registry_does_not_know():
    from vm import Registry

    vtx = transfer(KEYS[0], 0, TO, 5)
    assert code_of(Executor(Registry()).check_admission, funded(100), vtx, 1, PARAMS) == (
        "unknown_type"
    )


def test_amount_is_not_an_admission_check():
    # Funds are checked at execution (the fee is paid even if the transfer fails).
    admit(transfer(KEYS[0], 0, TO, 10**9), funded(1_000))


def test_body_fields_are_what_was_signed():
    raw = signed(KEYS[0], 1, Transfer(TO, 5), fee=12, expiry=13)
    body = TxBody.decode(SignedTx.decode(raw).body)
    assert body == TxBody(1, 12, 13, "transfer", Transfer(TO, 5).encode())


def test_the_last_nonce_is_refused_at_admission():
    # Its sender's next nonce would be 2**64, which no account can hold: it could
    # never execute, so it never enters the mempool.
    last = 2**64 - 1
    state = funded(1_000, nonces=(last,))
    with pytest.raises(InvalidTransaction, match=f"nonce {last}") as exc:
        admit(transfer(KEYS[0], last, TO, 5), state)
    assert exc.value.code == "nonce_exhausted"
    # Also ahead of the state nonce (it would be a gap the sender can never fill past).
    assert code_of(admit, transfer(KEYS[0], last, TO, 5), funded(1_000)) == "nonce_exhausted"
