import copy
import json
import stat
from dataclasses import replace

import pytest

from core import DecodeError, PrivateKey, format_address, pack_raw
from core.codec import UINT64_MAX
from genesis import (
    Genesis,
    GenesisAccount,
    GenesisValidator,
    InvalidGenesis,
    genesis_state,
    load_genesis,
    save_genesis,
)
from vm.accounts import Account, account_key
from vm.params import ChainParams

KEYS = [PrivateKey(bytes([i + 1]) * 32) for i in range(4)]


def sample(**changes):
    g = Genesis(
        chain_id="liveledger-test",
        genesis_time_ms=1_700_000_000_000,
        params=ChainParams.default(),
        accounts=(
            GenesisAccount(KEYS[0].address, 10**15),
            GenesisAccount(KEYS[1].address, 1_000),
        ),
        validators=(
            GenesisValidator("node0", KEYS[2].public_key, 1),
            GenesisValidator("node1", KEYS[3].public_key, 2),
        ),
    )
    return replace(g, **changes)


def test_json_round_trip():
    g = sample()
    doc = g.to_json()
    assert Genesis.from_json(doc) == g
    # Through text, as on disk.
    assert Genesis.from_json(json.loads(json.dumps(doc))) == g


def test_json_is_human_readable():
    doc = sample().to_json()
    assert doc["accounts"][0]["address"] == format_address(KEYS[0].address)
    assert doc["validators"][0]["public_key"] == KEYS[2].public_key.hex()
    assert doc["params"]["min_fee"] == ChainParams.default().min_fee
    assert list(doc) == ["chain_id", "genesis_time_ms", "params", "accounts", "validators"]


def test_codec_round_trip_and_hash():
    g = sample()
    assert Genesis.decode(g.encode()) == g
    assert len(g.hash) == 32
    assert sample().hash == g.hash
    assert Genesis.from_json(g.to_json()).hash == g.hash


def _variants():
    g = sample()
    a0, a1 = g.accounts
    v0, v1 = g.validators
    yield "chain_id", replace(g, chain_id="liveledger-other")
    yield "genesis_time_ms", replace(g, genesis_time_ms=g.genesis_time_ms + 1)
    for name in ("min_fee", "max_block_txs", "max_block_bytes", "max_expiry_blocks"):
        p = g.params
        yield f"params.{name}", replace(g, params=p.replace(**{name: getattr(p, name) + 1}))
    yield (
        "params.max_tx_bytes",
        replace(g, params=g.params.replace(max_tx_bytes=g.params.max_tx_bytes - 1)),
    )
    yield "account address", replace(g, accounts=(replace(a0, address=bytes(20)), a1))
    yield "account balance", replace(g, accounts=(replace(a0, balance=a0.balance + 1), a1))
    yield "account order", replace(g, accounts=(a1, a0))
    yield "account removed", replace(g, accounts=(a0,))
    yield "validator name", replace(g, validators=(replace(v0, name="other"), v1))
    yield "validator key", replace(g, validators=(replace(v0, public_key=KEYS[0].public_key), v1))
    yield "validator power", replace(g, validators=(replace(v0, power=5), v1))
    yield "validator order", replace(g, validators=(v1, v0))
    yield "validator removed", replace(g, validators=(v0,))


def test_hash_changes_with_every_field():
    base = sample().hash
    hashes = {"base": base}
    for label, variant in _variants():
        assert variant.hash != base, label
        hashes[label] = variant.hash
    assert len(set(hashes.values())) == len(hashes)


def test_hash_is_domain_separated():
    from core.hashing import Domain, hash_bytes

    g = sample()
    assert g.hash == hash_bytes(Domain.GENESIS, g.encode())
    assert g.hash != hash_bytes(Domain.TX, g.encode())


def test_genesis_state():
    g = sample()
    state = genesis_state(g)
    assert state == {
        account_key(KEYS[0].address): Account(balance=10**15, nonce=0).encode(),
        account_key(KEYS[1].address): Account(balance=1_000, nonce=0).encode(),
    }
    assert sum(Account.decode(v).balance for v in state.values()) == g.total_supply


def test_save_and_load(tmp_path):
    g = sample()
    path = tmp_path / "genesis.json"
    data = save_genesis(path, g)
    assert path.read_bytes() == data
    assert load_genesis(path) == g
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    # Overwriting is atomic and leaves no temporary file.
    g2 = sample(chain_id="another")
    save_genesis(path, g2)
    assert load_genesis(path) == g2
    assert [p.name for p in tmp_path.iterdir()] == ["genesis.json"]


def test_load_missing_file(tmp_path):
    with pytest.raises(InvalidGenesis, match="cannot read genesis file"):
        load_genesis(tmp_path / "nope.json")


def _bad(mutate):
    doc = copy.deepcopy(sample().to_json())
    mutate(doc)
    return doc


ADDR0 = format_address(KEYS[0].address)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("params"), r"genesis: missing field\(s\): params"),
        (lambda d: d.update(extra=1), r"genesis: unknown field\(s\): extra"),
        (lambda d: d["params"].pop("min_fee"), r"params: missing field\(s\): min_fee"),
        (lambda d: d["params"].update(gas=1), r"params: unknown field\(s\): gas"),
        (lambda d: d["params"].update(min_fee="1"), "params.min_fee: expected an integer"),
        (lambda d: d["params"].update(max_block_txs=0), "params: max_block_txs must be at least"),
        (lambda d: d["accounts"][0].pop("balance"), r"accounts\[0\]: missing field"),
        (lambda d: d["accounts"][1].update(memo="x"), r"accounts\[1\]: unknown field"),
        (lambda d: d["accounts"].append(d["accounts"][0]), "duplicate account address " + ADDR0),
        (lambda d: d["validators"].append(d["validators"][0]), "duplicate validator name"),
        (
            lambda d: d["validators"][1].update(public_key=d["validators"][0]["public_key"]),
            "duplicate validator public key",
        ),
        (lambda d: d.update(validators=[]), "at least one validator, got 0"),
        (lambda d: d["accounts"][0].update(address="ll1qqqq"), r"accounts\[0\]\.address: bad"),
        (
            lambda d: d["accounts"][0].update(address=d["accounts"][0]["address"][:-1] + "q"),
            "checksum",
        ),
        (
            lambda d: d["accounts"][0].update(address=d["accounts"][0]["address"].upper()),
            "must be lower case",
        ),
        (lambda d: d["accounts"][0].update(address="cosmos1abc"), "bad address"),
        (lambda d: d["accounts"][0].update(address=12), "expected a string"),
        (lambda d: d["accounts"][0].update(balance=True), "expected an integer, got a boolean"),
        (lambda d: d["accounts"][0].update(balance=-1), r"expected an integer in 0\.\.2\*\*64-1"),
        (lambda d: d["accounts"][0].update(balance=2**64), r"0\.\.2\*\*64-1"),
        (lambda d: d["accounts"][0].update(balance=0), "balance must be in 1"),
        (lambda d: d["accounts"][1].update(balance=UINT64_MAX), "total supply"),
        (lambda d: d["validators"][0].update(power=0), r"validators\[0\]: .*power must be"),
        (lambda d: d["validators"][0].update(public_key="ab"), "expected 32 bytes, got 1"),
        (lambda d: d["validators"][0].update(public_key="zz" * 32), "not valid hex"),
        (
            lambda d: d["validators"][0].update(
                public_key=d["validators"][0]["public_key"].upper()
            ),
            "lower case",
        ),
        (lambda d: d["validators"][0].update(name="no spaces"), "validator name must match"),
        (lambda d: d["validators"][0].update(name=""), "validator name must match"),
        (lambda d: d.update(chain_id=""), "chain_id must match"),
        (lambda d: d.update(chain_id="chain id"), "chain_id must match"),
        (lambda d: d.update(chain_id="x" * 65), "chain_id must match"),
        (lambda d: d.update(genesis_time_ms="now"), "genesis_time_ms: expected an integer"),
        (lambda d: d.update(accounts={}), "accounts: expected a list"),
        (lambda d: d.update(validators=[1]), r"validators\[0\]: expected an object"),
    ],
)
def test_validation_errors(mutate, message):
    with pytest.raises(InvalidGenesis, match=message) as info:
        Genesis.from_json(_bad(mutate))
    assert info.value.code == "invalid_genesis"


@pytest.mark.parametrize(
    "first, second",
    [
        ("node1.example:26656", "node1.example:26656"),
        # DNS names ignore case and an IPv6 address has many spellings: one endpoint each.
        ("node1.example:26656", "Node1.EXAMPLE:26656"),
        ("[2001:db8::1]:26656", "[2001:DB8:0::1]:26656"),
    ],
)
def test_two_validators_at_one_endpoint_are_refused(first, second):
    g = sample()
    v0, v1 = g.validators
    with pytest.raises(InvalidGenesis, match=f"duplicate validator address .*{second[1:6]}"):
        replace(g, validators=(replace(v0, address=first), replace(v1, address=second)))


def test_an_address_is_kept_and_hashed_as_written():
    # Compared folded, never rewritten: an existing genesis keeps its bytes and hash.
    g = sample()
    v0, v1 = g.validators
    mixed = replace(g, validators=(replace(v0, address="Node0.Example:1"), v1))
    assert mixed.to_json()["validators"][0]["address"] == "Node0.Example:1"
    assert Genesis.from_json(mixed.to_json()) == mixed
    assert mixed.hash != replace(g, validators=(replace(v0, address="node0.example:1"), v1)).hash


def test_from_json_not_an_object():
    with pytest.raises(InvalidGenesis, match="expected an object, got a list"):
        Genesis.from_json([])


def test_total_validator_power_must_fit():
    g = sample()
    v0, v1 = g.validators
    with pytest.raises(InvalidGenesis, match="total validator power"):
        replace(g, validators=(replace(v0, power=UINT64_MAX), v1))


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"chain_id": "a", "chain_id": "b"}', "duplicate JSON key 'chain_id'"),
        ('{"genesis_time_ms": 1.5}', "must be integers"),
        ('{"genesis_time_ms": NaN}', "must be integers"),
        ("{", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        # A nesting bomb is malformed input, not a crash of the reader.
        ("[" * 100_000, "nested too deeply"),
        ('{"chain_id": ' + "[" * 5_000 + "]" * 5_000 + "}", "nested too deeply"),
    ],
)
def test_load_rejects_lenient_json(tmp_path, text, message):
    path = tmp_path / "genesis.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(InvalidGenesis, match=message) as info:
        load_genesis(path)
    assert str(path) in str(info.value)


def test_load_error_names_file_and_field(tmp_path):
    path = tmp_path / "genesis.json"
    path.write_text(json.dumps(_bad(lambda d: d["accounts"][0].update(balance="1"))))
    with pytest.raises(InvalidGenesis, match=r"genesis\.json: accounts\[0\]\.balance"):
        load_genesis(path)


def test_decode_enforces_the_same_rules():
    # A canonical encoding of a document with a duplicate account must not decode.
    raw = sample().to_raw()
    raw[3] = [raw[3][0], raw[3][0]]
    with pytest.raises(DecodeError, match="duplicate account"):
        Genesis.decode(pack_raw(raw))
    raw = sample().to_raw()
    raw[4] = []
    with pytest.raises(DecodeError, match="at least one validator"):
        Genesis.decode(pack_raw(raw))
    with pytest.raises(DecodeError):
        Genesis.decode(sample().encode() + b"\x00")


def test_constructor_checks():
    with pytest.raises(InvalidGenesis, match="balance must be"):
        GenesisAccount(KEYS[0].address, 0)
    with pytest.raises(InvalidGenesis, match="balance must be"):
        GenesisAccount(KEYS[0].address, 2**64)
    with pytest.raises(InvalidGenesis, match="20 bytes"):
        GenesisAccount(b"short", 1)
    with pytest.raises(InvalidGenesis, match="32 bytes"):
        GenesisValidator("v", b"short", 1)


def test_commerce_treasury_may_not_be_a_module_account():
    from apps.commerce import CommerceGenesis
    from consensus.staking_state import BONDED_POOL

    ok = sample(commerce=CommerceGenesis((KEYS[0].address,), KEYS[1].address))
    assert Genesis.from_json(ok.to_json()) == ok
    with pytest.raises(InvalidGenesis, match="treasury must not be a module account.*bonded_pool"):
        sample(commerce=CommerceGenesis((KEYS[0].address,), BONDED_POOL))
