"""A bounded fuzzing campaign over every wire type's decoder and the transaction envelope.

The long campaign (over a million inputs) is ``make fuzz`` (benches/fuzz_codec.py);
this one runs the same checks on a few examples per class, well under a minute.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benches.fuzz_codec import (
    RARELY_VALID,
    check_decode,
    fuzz_encoding,
    fuzz_tx,
    instances,
    tx_seeds,
    wire_classes,
)
from benches.fuzz_codec import Tally as _Tally
from core.errors import DecodeError
from core.keys import PrivateKey
from genesis.document import GenesisValidator
from node.service import build_registry

CLASSES = wire_classes()
REGISTRY = build_registry()
KEY = PrivateKey.generate()
BOUNDED = settings(
    max_examples=2,
    database=None,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
SEEDS = st.integers(0, 2**32).map(random.Random)


def test_every_package_contributes_wire_types():
    modules = {cls.__module__.split(".")[0] for cls in CLASSES}
    assert {"core", "consensus", "p2p", "apps", "vm", "storage", "genesis"} <= modules
    assert len(CLASSES) > 100


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_decode_accepts_exactly_the_canonical_encoding_or_raises_decode_error(cls):
    # Invariants that random fields almost never meet: random input only for these.
    strategy = None if cls.__name__ in RARELY_VALID else instances(cls)
    tally = _Tally()
    if strategy is not None:

        @BOUNDED
        @given(obj=strategy, rng=SEEDS)
        def run(obj, rng):
            fuzz_encoding(cls, obj.encode(), rng, 30, CLASSES, tally)

        run()

    @BOUNDED
    @given(data=st.binary(max_size=64))
    def random_bytes(data):
        check_decode(cls, data, tally)

    random_bytes()
    assert tally.inputs > 0


@pytest.mark.parametrize("tx_type", REGISTRY.tx_types)
def test_transaction_checks_refuse_with_invalid_or_accept(tx_type):
    payloads = dict(tx_seeds(REGISTRY))[tx_type]
    tally = _Tally()

    @settings(BOUNDED, max_examples=2)
    @given(payload=payloads, body_ints=st.tuples(*[st.integers(0, 2**64 - 1)] * 3), rng=SEEDS)
    def run(payload, body_ints, rng):
        fuzz_tx(KEY, tx_type, payload, body_ints, rng, 20, REGISTRY, tally)

    run()
    assert tally.inputs > 0


def test_invariant_of_a_class_is_a_decode_error():
    # Found by the fuzzer: GenesisValidator checks its name in __post_init__ and raised
    # InvalidGenesis out of decode, which callers that catch DecodeError let through.
    # [name "00000\x06", public key, power 1, address ""]
    data = bytes.fromhex("94a6303030303006c420") + bytes(32) + b"\x01\xa0"
    with pytest.raises(DecodeError, match="validator name"):
        GenesisValidator.decode(data)
