import pytest

from core.codec import pack_raw
from core.errors import DecodeError
from vm import ChainParams


def test_defaults_round_trip():
    p = ChainParams.default()
    assert p == ChainParams()
    assert ChainParams.decode(p.encode()) == p
    assert p.min_fee > 0 and p.max_block_bytes >= p.max_tx_bytes


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"max_block_txs": 0}, "max_block_txs must be at least 1"),
        ({"max_block_txs": 10**6}, "max_block_txs must be at most"),
        ({"max_tx_bytes": 10**6}, "max_tx_bytes must be at most"),
        ({"max_block_bytes": 100}, "max_block_bytes must be at least"),
        ({"max_block_bytes": 2**40}, "max_block_bytes must be at most"),
        ({"max_block_bytes": 12 * 2**20 + 1}, "max_block_bytes must be at most 12582912"),
        ({"max_expiry_blocks": 0}, "max_expiry_blocks must be at least 1"),
        ({"time_precision_ms": 99}, "time_precision_ms must be in 100..60000"),
        ({"time_precision_ms": 60_001}, "time_precision_ms must be in 100..60000"),
        ({"time_message_delay_ms": 999}, "time_message_delay_ms must be in 1000..600000"),
        ({"time_message_delay_ms": 2**64 - 1}, "time_message_delay_ms must be in 1000..600000"),
    ],
)
def test_bad_params_are_refused(changes, match):
    with pytest.raises(DecodeError, match=match):
        ChainParams.default().replace(**changes)


def test_bad_params_are_refused_when_decoding():
    raw = ChainParams().to_raw()
    raw[4] = 0  # max_expiry_blocks
    with pytest.raises(DecodeError, match="max_expiry_blocks"):
        ChainParams.decode(pack_raw(raw))
