"""The genesis ceremony's functions: node homes, signed contributions, assembly, install."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import stat
import tempfile

import pytest

from consensus import GenesisStaking
from core import PrivateKey, parse_address
from core.keystore import load_key
from genesis import (
    HomeError,
    InvalidContribution,
    InvalidGenesis,
    SignedContribution,
    assemble,
    genesis_json_bytes,
    genesis_state,
    init_home,
    install_genesis,
    load_contribution,
    load_genesis,
    make_contribution,
    save_contribution,
)
from genesis.ceremony import MAX_CONTRIBUTION_BYTES
from genesis.document import (
    MAX_GENESIS_FILE_BYTES,
    Genesis,
    GenesisValidator,
    parse_net_address,
)
from genesis.home import MAX_CONFIG_FILE_BYTES, read_config
from node.config import ConfigError, load_config
from node.service import Node
from tests.fsyncs import dir_id, fsynced_dirs
from vm import ChainParams
from vm.accounts import Account, account_key

CHAIN = "consortium-1"
PASS = "s3cret"


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Four homes made by init_home, each with a contribution signed by its node key."""
    root = tmp_path_factory.mktemp("members")
    out = []
    for i, name in enumerate(("platform", "brand-a", "brand-b", "logistics")):
        info = init_home(
            root / name,
            name,
            PASS,
            http=("127.0.0.1", 27000 + i),
            p2p=("0.0.0.0", 27100 + i),
            external=(f"10.0.0.{i + 1}", 26656),
        )
        key = load_key(info.home / "node_key.json", PASS)
        out.append((info, make_contribution(key, CHAIN, name, info.p2p_address, 5_000)))
    return out


def test_init_makes_a_home_with_an_encrypted_key_and_config(members):
    info, _ = members[1]
    assert sorted(p.name for p in info.home.iterdir()) == ["config.json", "node_key.json"]
    assert stat.S_IMODE(info.home.stat().st_mode) == 0o700
    assert stat.S_IMODE((info.home / "node_key.json").stat().st_mode) == 0o600
    key = load_key(info.home / "node_key.json", PASS)
    assert key.public_key == info.public_key
    assert key.seed.hex() not in (info.home / "config.json").read_text()
    config = load_config(info.home)
    assert (config.moniker, config.p2p_host, config.p2p_port) == ("brand-a", "0.0.0.0", 27101)
    assert (config.external_host, config.external_port) == ("10.0.0.2", 26656)
    assert (config.http_host, config.http_port) == ("127.0.0.1", 27001)
    assert config.peers == ()
    assert info.p2p_address == "10.0.0.2:26656"


def test_init_refuses_an_existing_home(members, tmp_path):
    info, _ = members[0]
    before = (info.home / "node_key.json").read_bytes()
    with pytest.raises(HomeError, match="refusing to overwrite"):
        init_home(info.home, "again", PASS)
    assert (info.home / "node_key.json").read_bytes() == before
    # An empty directory is a fine place for a home.
    (tmp_path / "empty").mkdir()
    assert init_home(tmp_path / "empty", "x", "").moniker == "x"


def test_init_in_an_existing_directory_closes_it_to_others(tmp_path):
    # `mkdir home && liveledger init --home home` (or a shared scratch directory): the
    # home must still be the member's alone, or anyone on the machine could swap its
    # config.json (peers, data_dir) or node key file before the node starts.
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o777)
    init_home(home, "m", PASS)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "node_key.json").stat().st_mode) == 0o600


def test_a_new_home_is_durable_in_its_parent(tmp_path, monkeypatch):
    # The node key is fsynced in the home, but a power loss could drop the new home's
    # own name, and the key with it.
    synced = fsynced_dirs(monkeypatch)
    init_home(tmp_path / "home", "m", PASS)
    assert dir_id(tmp_path) in synced and dir_id(tmp_path / "home") in synced


def test_a_home_s_config_is_read_as_a_bounded_regular_file(tmp_path):
    # What contribute, install and set-address read: a device would be read as it is
    # (a FIFO waited on for ever), a huge file parsed whole.
    home = init_home(tmp_path / "home", "m", PASS).home
    path = home / "config.json"
    good = path.read_bytes()
    path.write_bytes(good + b" " * (MAX_CONFIG_FILE_BYTES + 1 - len(good)))
    with pytest.raises(HomeError, match=f"{path} is larger than {MAX_CONFIG_FILE_BYTES} bytes"):
        read_config(home)
    path.unlink()
    path.symlink_to("/dev/null")
    with pytest.raises(HomeError, match=f"{path} is not a regular file but a character device"):
        read_config(home)
    path.unlink()
    with pytest.raises(HomeError, match="no config.json in"):
        read_config(home)


@pytest.mark.parametrize("moniker", ["", "brand a", "red\x1b[31m", "x" * 65])
def test_init_refuses_a_moniker_no_contribution_could_carry(tmp_path, moniker):
    # Refused at init, not at contribute time, and before anything is written.
    with pytest.raises(HomeError, match="moniker must match"):
        init_home(tmp_path / "home", moniker, PASS)
    assert not (tmp_path / "home").exists()


def test_assembled_genesis_lists_every_contribution(members):
    faucet = PrivateKey.generate()
    genesis = assemble(
        CHAIN,
        [c for _, c in members],
        accounts=[(faucet.address, 10**12)],
        validator_balance=7_000,
        genesis_time_ms=1_000,
    )
    assert [v.name for v in genesis.validators] == [i.moniker for i, _ in members]
    assert [v.address for v in genesis.validators] == [f"10.0.0.{i}:26656" for i in range(1, 5)]
    assert genesis.staking is not None and genesis.staking.self_bond == 5_000
    state = genesis_state(genesis)
    for info, _ in members:
        account = Account.decode(state[account_key(parse_address(info.address))])
        assert account.balance == 7_000
    # The same inputs give the same document: anyone can re-assemble and compare.
    again = assemble(
        CHAIN,
        [c for _, c in members],
        accounts=[(faucet.address, 10**12)],
        validator_balance=7_000,
        genesis_time_ms=1_000,
    )
    assert again.hash == genesis.hash
    # The addresses are part of the hash members compare.
    moved = Genesis.from_json(
        {
            **genesis.to_json(),
            "validators": [
                {**v, "address": "10.9.9.9:1"} if i == 0 else v
                for i, v in enumerate(genesis.to_json()["validators"])
            ],
        }
    )
    assert moved.hash != genesis.hash


def test_a_contribution_round_trips_through_its_file(members, tmp_path):
    _, signed = members[0]
    save_contribution(tmp_path / "c.json", signed)
    assert load_contribution(tmp_path / "c.json") == signed


def _file(tmp_path, signed, **changes):
    doc = {**signed.to_json(), **changes}
    path = tmp_path / "contribution.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    "changes, why",
    [
        ({"stake": 5_001}, "signature does not verify"),
        ({"address": "10.0.0.66:26656"}, "signature does not verify"),
        ({"moniker": "impostor"}, "signature does not verify"),
        ({"chain_id": "other-chain"}, "is for chain 'other-chain'"),
    ],
)
def test_a_forged_contribution_is_refused(members, tmp_path, changes, why):
    _, signed = members[0]
    forged = load_contribution(_file(tmp_path, signed, **changes))
    with pytest.raises(InvalidContribution, match=why):
        assemble(CHAIN, [forged, *(c for _, c in members[1:])])


def test_a_contribution_signed_by_another_key_is_refused(members):
    # Someone submitting a member's public key with their own signature.
    _, victim = members[0]
    mallory = PrivateKey.generate()
    theirs = make_contribution(mallory, CHAIN, "platform", "10.0.0.1:26656", 5_000)
    doc = {**theirs.to_json(), "public_key": victim.contribution.public_key.hex()}
    with pytest.raises(InvalidContribution, match="signature does not verify"):
        assemble(CHAIN, [SignedContribution.from_json(doc)])


@pytest.mark.parametrize("field", ["public key", "moniker", "address"])
def test_duplicates_are_refused(members, field):
    _, first = members[0]
    other = PrivateKey.generate()
    c = first.contribution
    if field == "public key":
        dup = first
    elif field == "moniker":
        dup = make_contribution(other, CHAIN, c.moniker, "10.0.0.77:26656", c.stake)
    else:
        dup = make_contribution(other, CHAIN, "someone", c.address, c.stake)
    with pytest.raises(InvalidContribution, match=f"duplicate {field}"):
        assemble(CHAIN, [first, dup])


def test_one_endpoint_spelled_twice_is_a_duplicate(members):
    # DNS names ignore case: both contributions would have peers dial one node.
    stake = members[0][1].contribution.stake
    a, b = PrivateKey.generate(), PrivateKey.generate()
    first = make_contribution(a, CHAIN, "a", "node1.example:26656", stake)
    dup = make_contribution(b, CHAIN, "b", "Node1.Example:26656", stake)
    with pytest.raises(InvalidContribution, match="duplicate address Node1.Example:26656"):
        assemble(CHAIN, [first, dup])


def test_stakes_are_checked(members):
    key = PrivateKey.generate()
    unlike = make_contribution(key, CHAIN, "late", "10.0.0.9:26656", 4_999)
    with pytest.raises(InvalidContribution, match="stakes differ"):
        assemble(CHAIN, [members[0][1], unlike])
    low = make_contribution(key, CHAIN, "late", "10.0.0.9:26656", 10)
    with pytest.raises(InvalidContribution, match="below min_self_bond 100"):
        assemble(CHAIN, [low], params=ChainParams(min_self_bond=100))
    with pytest.raises(InvalidContribution, match="no contributions"):
        assemble(CHAIN, [])


@pytest.mark.parametrize(
    "address, why",
    [
        ("0.0.0.0:26656", "listen-on-all"),
        ("[::]:26656", "listen-on-all"),
        ("node.example.com", "host:port"),
        ("node.example.com:0", "host:port"),
        ("node.example.com:65536", "1..65535"),
        ("node.example.com:026656", "host:port"),
        ("[1::2::3]:1", "IPv6"),
    ],
)
def test_addresses_must_be_dialable(address, why):
    with pytest.raises(InvalidGenesis, match=why):
        make_contribution(PrivateKey.generate(), CHAIN, "m", address, 1)


def test_network_addresses_parse():
    assert parse_net_address("node-1.example.com:26656") == ("node-1.example.com", 26656)
    assert parse_net_address("[::1]:9") == ("::1", 9)
    assert parse_net_address("192.0.2.7:1") == ("192.0.2.7", 1)


@pytest.mark.parametrize(
    "change, why",
    [
        ({"extra": 1}, "unknown \\['extra'\\]"),
        ({"version": 2}, "version must be 1"),
        ({"stake": "5000"}, "stake must be an integer"),
        ({"signature": "AB" * 64}, "lower-case hex"),
        # Lone surrogates are JSON but no text: refused, not a crash in the codec.
        ({"moniker": "\ud800"}, "moniker must be an ASCII string"),
        ({"address": "\udfff:1"}, "address must be an ASCII string"),
    ],
)
def test_contribution_files_are_read_strictly(members, tmp_path, change, why):
    _, signed = members[0]
    with pytest.raises(InvalidContribution, match=why):
        load_contribution(_file(tmp_path, signed, **change))
    path = tmp_path / "float.json"
    path.write_text(json.dumps(signed.to_json()).replace('"stake": 5000', '"stake": 5000.0'))
    with pytest.raises(InvalidContribution, match="integers"):
        load_contribution(path)


def test_a_hostile_contribution_file_is_refused_not_a_crash(tmp_path):
    # Within the size cap, a nesting bomb is still just not a contribution.
    path = tmp_path / "bomb.json"
    path.write_text('{"moniker": ' + "[" * 8_000 + "]" * 8_000 + "}")
    with pytest.raises(InvalidContribution, match="nested too deeply"):
        load_contribution(path)
    path.write_text(" " * (16 * 1024 + 1))
    with pytest.raises(InvalidContribution, match="larger than"):
        load_contribution(path)


def test_a_contribution_that_is_not_a_regular_file_is_refused_unread(members, tmp_path):
    # A FIFO would block the command for ever (open waits for a writer, read for its
    # end). Here a writer holds it open with more than a contribution's worth queued,
    # so that a reader that opened it would not block but read: it is refused unread.
    fifo = tmp_path / "c.fifo"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        os.write(writer, b" " * (MAX_CONTRIBUTION_BYTES + 1))
        with pytest.raises(InvalidContribution, match=f"{fifo} is not a regular file but a FIFO"):
            load_contribution(fifo)
        assert len(os.read(writer, MAX_CONTRIBUTION_BYTES + 1)) == MAX_CONTRIBUTION_BYTES + 1
    finally:
        os.close(writer)
    with pytest.raises(InvalidGenesis, match="is not a regular file but a character device"):
        load_genesis("/dev/null")


def test_install_checks_the_hash_and_fills_peers(members, tmp_path):
    genesis = assemble(CHAIN, [c for _, c in members], genesis_time_ms=5)
    data = genesis_json_bytes(genesis)
    info, _ = members[2]
    config_before = (info.home / "config.json").read_bytes()
    wrong = bytes(32)
    with pytest.raises(InvalidGenesis, match="nothing installed"):
        install_genesis(info.home, data, wrong)
    # Refused: nothing written.
    assert not (info.home / "genesis.json").exists()
    assert (info.home / "config.json").read_bytes() == config_before

    install_genesis(info.home, data, genesis.hash)
    assert load_genesis(info.home / "genesis.json").hash == genesis.hash
    peers = load_config(info.home).peers
    others = [m for m in members if m[0] is not info]
    assert [p.public_key for p in peers] == [m[0].public_key.hex() for m in others]
    assert [(p.host, p.port) for p in peers] == [
        parse_net_address(m[0].p2p_address) for m in others
    ]
    # Installing again is harmless; another chain's genesis is refused.
    install_genesis(info.home, data, genesis.hash)
    assert len(load_config(info.home).peers) == 3
    other = assemble(
        "other-chain",
        [make_contribution(PrivateKey.generate(), "other-chain", "x", "10.1.1.1:1", 1)],
    )
    with pytest.raises(HomeError, match="already holds another genesis"):
        install_genesis(info.home, genesis_json_bytes(other), other.hash)


def _failing(real, name, step):
    """``real`` (an os or tempfile function) failing with a full disk when its first
    argument is ``name``'s file (``step``: "temp" for a temporary file of it)."""

    def call(*args, **kwargs):
        target = kwargs.get("prefix", "") if step == "temp" else str(args[1])
        if target.startswith(f".{name}.") or target.endswith(f"/{name}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    return call


def test_an_install_the_disk_cannot_hold_changes_nothing(members, tmp_path, monkeypatch):
    # genesis.json is up to 32 MB against config.json's few kB: when the disk is full
    # for it, config.json must not already hold the new peers (a later install of a
    # corrected genesis would keep those that it drops, as peers added by hand).
    genesis = assemble(CHAIN, [c for _, c in members], genesis_time_ms=5)
    info = init_home(tmp_path / "full", "full", PASS)
    config_before = (info.home / "config.json").read_bytes()
    with monkeypatch.context() as patch:
        patch.setattr(tempfile, "mkstemp", _failing(tempfile.mkstemp, "genesis.json", "temp"))
        with pytest.raises(HomeError, match="No space left.*no genesis installed"):
            install_genesis(info.home, genesis_json_bytes(genesis), genesis.hash)
    assert (info.home / "config.json").read_bytes() == config_before
    assert sorted(p.name for p in info.home.iterdir()) == ["config.json", "node_key.json"]


def test_an_install_stopped_before_genesis_is_refused_by_a_start_and_redone(
    members, tmp_path, monkeypatch
):
    # The last step of install fails (or the machine stops) after config.json took the
    # peers: with no genesis.json no node starts there, saying so, and install completes.
    genesis = assemble(CHAIN, [c for _, c in members], genesis_time_ms=5)
    data = genesis_json_bytes(genesis)
    info = init_home(tmp_path / "cut", "cut", PASS)
    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", _failing(os.replace, "genesis.json", "rename"))
        with pytest.raises(HomeError, match="no genesis installed, run install again"):
            install_genesis(info.home, data, genesis.hash)
    assert not (info.home / "genesis.json").exists()
    with pytest.raises(ConfigError, match="no genesis.json in .*completes when run again"):
        Node.from_home(info.home, PASS)
    install_genesis(info.home, data, genesis.hash)
    assert load_genesis(info.home / "genesis.json").hash == genesis.hash
    assert len(load_config(info.home).peers) == len(members)
    assert sorted(p.name for p in info.home.iterdir()) == [
        "config.json",
        "genesis.json",
        "node_key.json",
    ]


@pytest.mark.parametrize(
    "change, says",
    [
        ({"address": "10.9.9.9:26656"}, "at '10.9.9.9:26656'"),
        ({"name": "impostor"}, "as 'impostor'"),
    ],
)
def test_install_refuses_a_genesis_that_changed_this_members_contribution(
    members, tmp_path, change, says
):
    # The genesis carries no contribution signatures; members compare its hash, so a
    # coordinator who rewrote one member's entry (peers dial its node elsewhere, or it
    # sits under another name) gets every hash to agree. Only that member can tell:
    # install refuses an entry for its key other than what its home contributed.
    info = init_home(tmp_path / "me", "me", PASS, external=("10.0.0.77", 26656))
    mine = make_contribution(
        load_key(info.home / "node_key.json", PASS), CHAIN, "me", info.p2p_address, 5_000
    )
    honest = assemble(CHAIN, [*(c for _, c in members), mine], genesis_time_ms=5)
    entry = dataclasses.replace(honest.validators[-1], **change)
    forged = dataclasses.replace(honest, validators=(*honest.validators[:-1], entry))
    config_before = (info.home / "config.json").read_bytes()
    with pytest.raises(HomeError, match=f"lists this node's key .*{says}.*nothing installed"):
        install_genesis(info.home, genesis_json_bytes(forged), forged.hash)
    assert not (info.home / "genesis.json").exists()
    assert (info.home / "config.json").read_bytes() == config_before
    # The document as contributed installs.
    install_genesis(info.home, genesis_json_bytes(honest), honest.hash)
    assert load_genesis(info.home / "genesis.json").hash == honest.hash


@pytest.fixture
def me(members, tmp_path):
    """A home beside ``members``, its contribution, and the honest genesis of all five."""
    info = init_home(tmp_path / "me", "me", PASS, external=("me.example", 26656))
    key = load_key(info.home / "node_key.json", PASS)
    mine = make_contribution(key, CHAIN, "me", info.p2p_address, 5_000)
    return info, mine, assemble(CHAIN, [*(c for _, c in members), mine], genesis_time_ms=5)


def _entry_changed(genesis, **change):
    entry = dataclasses.replace(genesis.validators[-1], **change)
    return dataclasses.replace(genesis, validators=(*genesis.validators[:-1], entry))


@pytest.mark.parametrize(
    "forge, says",
    [
        # Left out: without --contribution only a note says so, and the node starts as
        # a non-validator of a chain its member never joined.
        (
            lambda g: dataclasses.replace(g, validators=g.validators[:-1]),
            "does not list this node's contribution 'me' .* among its 4 validators",
        ),
        (lambda g: _entry_changed(g, name="impostor"), "name 'impostor' where it contributed 'me'"),
        (
            lambda g: _entry_changed(g, address="me.example:1"),
            "address 'me.example:1' where it contributed 'me.example:26656'",
        ),
        (
            lambda g: dataclasses.replace(g, staking=GenesisStaking(self_bond=6_000)),
            "self-bond 6000 where it contributed 5000",
        ),
    ],
)
def test_install_with_the_contribution_refuses_a_genesis_that_does_not_list_it(
    me, members, forge, says
):
    info, mine, honest = me
    forged = forge(honest)
    config_before = (info.home / "config.json").read_bytes()
    with pytest.raises(HomeError, match=f"{says}.*nothing installed"):
        install_genesis(info.home, genesis_json_bytes(forged), forged.hash, contribution=mine)
    assert not (info.home / "genesis.json").exists()
    assert (info.home / "config.json").read_bytes() == config_before
    install_genesis(info.home, genesis_json_bytes(honest), honest.hash, contribution=mine)
    assert load_genesis(info.home / "genesis.json").hash == honest.hash


def test_install_with_a_contribution_not_this_nodes_or_not_this_chains_is_refused(me, members):
    info, mine, honest = me
    data = genesis_json_bytes(honest)
    with pytest.raises(HomeError, match="signed by node key .* not this home's"):
        install_genesis(info.home, data, honest.hash, contribution=members[0][1])
    key = load_key(info.home / "node_key.json", PASS)
    elsewhere = make_contribution(key, "other-chain", "me", info.p2p_address, 5_000)
    with pytest.raises(HomeError, match="for chain 'other-chain'.*'consortium-1'"):
        install_genesis(info.home, data, honest.hash, contribution=elsewhere)
    forged = dataclasses.replace(mine, signature=bytes(64))
    with pytest.raises(HomeError, match="signature does not verify"):
        install_genesis(info.home, data, honest.hash, contribution=forged)
    assert not (info.home / "genesis.json").exists()


def test_install_refuses_what_a_node_could_not_load(members, tmp_path):
    # Whitespace leaves the hash alone; past the file cap no node would start from it.
    genesis = assemble(CHAIN, [c for _, c in members], genesis_time_ms=5)
    padded = genesis_json_bytes(genesis) + b" " * MAX_GENESIS_FILE_BYTES
    assert Genesis.from_json(json.loads(padded)).hash == genesis.hash
    info = init_home(tmp_path / "late", "late", PASS)
    config_before = (info.home / "config.json").read_bytes()
    with pytest.raises(InvalidGenesis, match="nothing installed"):
        install_genesis(info.home, padded, genesis.hash)
    assert not (info.home / "genesis.json").exists()
    assert (info.home / "config.json").read_bytes() == config_before


def test_validator_addresses_in_the_file_form():
    key = PrivateKey.generate()
    with_address = GenesisValidator("v", key.public_key, 1, "10.0.0.1:26656")
    plain = GenesisValidator("w", PrivateKey.generate().public_key, 1)
    genesis = assemble(CHAIN, [make_contribution(key, CHAIN, "v", "10.0.0.1:26656", 1)])
    doc = genesis.to_json()
    assert doc["validators"][0]["address"] == with_address.address
    # Without a published address the file form has no "address" field.
    unlisted = dataclasses.replace(genesis, validators=(plain,), staking=None)
    assert "address" not in unlisted.to_json()["validators"][0]
    assert Genesis.from_json(unlisted.to_json()) == unlisted
    assert Genesis.from_json(doc) == genesis
    doc["validators"][0]["address"] = ""
    with pytest.raises(InvalidGenesis, match="leave it out rather than empty"):
        Genesis.from_json(doc)
    doc["validators"][0]["address"] = "0.0.0.0:1"
    with pytest.raises(InvalidGenesis, match="listen-on-all"):
        Genesis.from_json(doc)


@pytest.mark.parametrize(
    "text, says",
    [
        (b'{"moniker": "a", "moniker": "b"}', "duplicate JSON key 'moniker'"),
        (b"[" * 100_000, "nested too deeply"),
    ],
)
def test_a_config_that_does_not_say_one_thing_is_refused_by_the_ceremony(tmp_path, text, says):
    # contribute and install read config.json as the node does: a setting given twice is
    # neither signed (contribute) nor collapsed to its last value when install rewrites it.
    info = init_home(tmp_path / "home", "m", PASS, p2p=("127.0.0.1", 26656))
    genesis = assemble(
        CHAIN,
        [make_contribution(load_key(info.home / "node_key.json", PASS), CHAIN, "m",
                           info.p2p_address, 5_000)],
    )  # fmt: skip
    (info.home / "config.json").write_bytes(text)
    with pytest.raises(HomeError, match=says):
        install_genesis(info.home, genesis_json_bytes(genesis), genesis.hash)
    assert (info.home / "config.json").read_bytes() == text
    assert not (info.home / "genesis.json").exists()
