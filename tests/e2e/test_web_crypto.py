"""The web app's chain code (web/src/lib) against Python's, byte for byte, under Node.js.

One ``node`` process runs the browser's modules on vectors made here: the canonical codec
(integers at every msgpack width, strings and bytes at their header boundaries, nested
nil), signed transactions, state proofs of presence and absence, commit certificates,
transactions' inclusion proofs and the sealed shipping address. Each must equal or pass
what Python makes and checks, and each one-byte change must be refused. Needs ``node`` and web/node_modules
(``make web``); skips saying which is missing.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import types
import typing
from typing import Annotated

import nacl.public
import pytest

from apps.commerce.keys import item_ref
from apps.commerce.model import Item, Merchant, ProvenanceEvent, Session
from apps.commerce.payloads import Bid, PlaceOrder, Tip
from apps.commerce.sealing import ShippingAddress, open_address
from consensus import ValidatorSet, make_commit
from consensus.staking_genesis import GenesisStaking
from consensus.staking_state import ProducerSet
from core import (
    BlockHeader,
    MerkleTree,
    PrivateKey,
    TxBody,
    merkle_root,
    pack_raw,
    sign_tx,
    tx_hash,
)
from core.codec import Len, Wire
from core.types import MAX_BLOCK_TXS
from genesis.document import Genesis, GenesisAccount, GenesisValidator
from storage import ZERO_REF, MemoryNodeStore, StateTree
from storage.state_tree import key_path
from tests.e2e.helpers import REPO
from vm.accounts import Account, Balance
from vm.currency import Currency, CurrencyList
from vm.inclusion import MAX_TX_PATH, TxInclusion, verify_tx_inclusion
from vm.params import ChainParams
from vm.receipts import Event, EventAttr, Receipt

WEB = REPO / "web"
pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (WEB / "node_modules").is_dir(),
    reason="needs Node.js and web/node_modules (`make web`)",
)

SCRIPT = """
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
// The modules as the page bundles them; their packages resolve from web/node_modules.
const lib = (name) => import(pathToFileURL(`${process.argv[2]}/src/lib/${name}.js`).href);
const codec = await lib("codec");
const crypto = await lib("crypto");
const light = await lib("light");
const v = JSON.parse(readFileSync(0, "utf8"));
const { hex, unhex, pack, unpack } = codec;
const flip = (h, at) => h.slice(0, at) + (h[at] === "0" ? "1" : "0") + h.slice(at + 1);
const out = {};
out.repacked = v.encodings.map((e) => hex(pack(unpack(unhex(e)))));
out.refused = v.noncanonical.map((e) => { try { unpack(unhex(e)); return false; } catch { return true; } });
out.tx = hex(crypto.signTx(unhex(v.tx.seed), v.tx.chain_id, {
  nonce: v.tx.nonce, fee: v.tx.fee, expiryHeight: v.tx.expiry, type: v.tx.type, payload: unhex(v.tx.payload),
}).encoded);
const proofOk = (p, proof) => {
  try {
    light.verifyProof(unhex(p.root), unhex(p.key), p.value === null ? null : unhex(p.value), light.decodeProof(unhex(proof)));
    return true;
  } catch (err) { if (!light.isVerificationFailure(err)) throw err; return false; }
};
out.paths = v.paths.map((k) => hex(light.keyPath(unhex(k))));
out.proofs = v.proofs.map((p) => [proofOk(p, p.proof), proofOk(p, flip(p.proof, p.proof.length - 3)), proofOk({ ...p, value: p.value && flip(p.value, 1) }, p.proof)]);
const commitOk = (c, blockHash) => {
  try {
    light.verifyCommit(light.decodeCommit(unhex(c)), v.commit.chain_id, v.commit.height, unhex(blockHash), light.validatorSet(v.commit.keys.map(unhex)));
    return true;
  } catch (err) { if (!light.isVerificationFailure(err)) throw err; return false; }
};
out.commit = [commitOk(v.commit.encoded, v.commit.block_hash), commitOk(flip(v.commit.encoded, v.commit.encoded.length - 5), v.commit.block_hash), commitOk(v.commit.short, v.commit.block_hash)];
const sealed = crypto.sealAddress(unhex(v.seal.public), v.seal.text);
out.sealed = { ciphertext: hex(sealed.ciphertext), commitment: hex(sealed.commitment) };
console.log(JSON.stringify(out));
"""


def run_script(path, source, vectors):
    """Run ``source`` (an ES module) under node with the web app's directory and
    ``vectors`` as JSON on stdin; the finished process, which must have succeeded."""
    path.write_text(source)
    done = subprocess.run(
        ["node", str(path), str(WEB)],
        input=json.dumps(vectors),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_the_browser_code_matches_the_chain_byte_for_byte(tmp_path):
    encodings = [
        pack_raw(x).hex()
        for x in (
            [0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**53 + 1, 2**64 - 1],
            ["", "a" * 31, "b" * 32, "c" * 255, "d" * 256, "ü€"],
            [b"", b"x" * 255, b"y" * 256, None, True, False, [[None, [b"\x00"]], []]],
        )
    ]
    # Non-minimal forms of the same values: a uint16 holding 1, a str8 holding "a", a
    # bin16 of 3 bytes; and a float and a map, which the codec never holds.
    noncanonical = ["cd0001", "d90161", "c50003616263", "cb3ff0000000000000", "81a16101"]

    key = PrivateKey(bytes(range(32)))
    body = TxBody(7, 1000, 2**32 + 5, "commerce.tip", pack_raw([1, 500, "great show"]))
    tx = sign_tx(key, "web-test-1", body)

    tree = StateTree(MemoryNodeStore())
    state = {bytes([0x01]) + bytes([i]) * 20: pack_raw([i * 1000, i]) for i in range(1, 40)}
    # Keys of every kind of group (storage.state_tree.key_group): records kept for an
    # address, numbered records sharing a group, and keys that are their own group.
    state[bytes([0x02]) + bytes([5]) * 20 + b"USD"] = pack_raw([7])
    state[bytes([0x2B]) + bytes([5]) * 20] = pack_raw([1, 2])
    state |= {bytes([0x2A]) + i.to_bytes(8, "big"): pack_raw([i]) for i in range(250, 262)}
    state[b"\x04"] = pack_raw(["USD"])
    update = tree.update(ZERO_REF, state)
    root = update.root
    # Every length around the group rule's edges (8, 9, 10; 20, 21, 22 bytes and more),
    # and accounts (0x01), which are their own group at any length.
    path_keys = [bytes(range(n)).hex() for n in range(0, 40)]
    path_keys += [
        (bytes([p]) + bytes(range(20, 20 + n))).hex() for p in (1, 2) for n in (19, 20, 21)
    ]
    proofs = []
    for k in (
        bytes([0x01]) + bytes([5]) * 20,
        bytes([0x01]) + bytes([33]) * 20,
        b"\x01absent",
        bytes([0x02]) + bytes([5]) * 20 + b"USD",
        bytes([0x2B]) + bytes([5]) * 20,
        bytes([0x2B]) + bytes([6]) * 20,
        bytes([0x2A]) + (255).to_bytes(8, "big"),
        bytes([0x2A]) + (256).to_bytes(8, "big"),
        bytes([0x2A]) + (300).to_bytes(8, "big"),
        b"\x04",
    ):
        value = state.get(k)
        proofs.append(
            {
                "root": root.hex(),
                "key": k.hex(),
                "value": None if value is None else value.hex(),
                "proof": tree.prove(update.ref, k).encode().hex(),
            }
        )

    keys = [PrivateKey(bytes([i]) * 32) for i in range(1, 5)]
    block_hash = bytes(range(32, 64))
    commit = make_commit(keys[:3], "web-test-1", 12, 0, block_hash)
    short = make_commit(keys[:2], "web-test-1", 12, 0, block_hash)

    merchant = nacl.public.PrivateKey.generate()
    text = "Ada Lovelace, 12 Harbour Street, 80-001 Gdansk"
    vectors = {
        "encodings": encodings,
        "noncanonical": noncanonical,
        "tx": {
            "seed": key.seed.hex(),
            "chain_id": "web-test-1",
            "nonce": body.nonce,
            "fee": body.fee,
            "expiry": body.expiry_height,
            "type": body.type,
            "payload": body.payload.hex(),
        },
        "proofs": proofs,
        "paths": path_keys,
        "commit": {
            "chain_id": "web-test-1",
            "height": 12,
            "block_hash": block_hash.hex(),
            "keys": [k.public_key.hex() for k in keys],
            "encoded": commit.encode().hex(),
            "short": short.encode().hex(),
        },
        "seal": {"public": bytes(merchant.public_key).hex(), "text": text},
    }
    assert ValidatorSet.of(k.public_key for k in keys).quorum == 3
    done = run_script(tmp_path / "check.mjs", SCRIPT, vectors)
    out = json.loads(done.stdout)
    assert out["repacked"] == encodings
    assert out["refused"] == [True] * len(noncanonical)
    assert out["tx"] == tx.encode().hex()
    # Present, present and absent: each verifies; a changed proof or value does not.
    assert out["proofs"] == [[True, False, p["value"] is None] for p in proofs]
    assert [p["value"] is None for p in proofs] == [
        False,
        False,
        True,
        False,
        False,
        True,
        False,
        False,
        True,
        False,
    ]
    assert out["paths"] == [key_path(bytes.fromhex(k)).hex() for k in path_keys]
    # 3 of 4 producers: final; a changed signature or 2 of 4: not.
    assert out["commit"] == [True, False, False]
    sealed = out["sealed"]
    opened = open_address(
        bytes(merchant), bytes.fromhex(sealed["ciphertext"]), bytes.fromhex(sealed["commitment"])
    )
    assert opened == text


RECORDS_SCRIPT = """
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const lib = (name) => import(pathToFileURL(`${process.argv[2]}/src/lib/${name}.js`).href);
const { fields, hex, pack, unhex, unpack } = await lib("codec");
const { RECORDS, record } = await lib("records");
const v = JSON.parse(readFileSync(0, "utf8"));
// Python's values, tagged: {bytes: hex}, {int: decimal}; strings, bools, nil and lists as they are.
const revive = (x) => Array.isArray(x) ? x.map(revive)
  : x !== null && typeof x === "object" ? ("bytes" in x ? unhex(x.bytes) : BigInt(x.int)) : x;
const tag = (k, x) => x instanceof Uint8Array ? { bytes: hex(x) }
  : typeof x === "number" || typeof x === "bigint" ? { int: String(x) } : x;
const out = { specs: RECORDS, decoded: {}, encoded: {} };
for (const [name, { encoding, raw }] of Object.entries(v)) {
  const spec = RECORDS[name];
  out.decoded[name] = JSON.parse(JSON.stringify(fields(unpack(unhex(encoding)), spec, name), tag));
  const values = Object.fromEntries(spec.map(([field], i) => [field, revive(raw[i])]));
  out.encoded[name] = hex(pack(record(spec, values, name)));
}
console.log(JSON.stringify(out));
"""


def kind_of(hint: object) -> str:
    """The browser's field kind (web/src/lib/records.js) of a Python field type."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return kind_of(inner) + "?"
    base, *meta = typing.get_args(hint) if typing.get_origin(hint) is Annotated else (hint,)
    if base is bytes:
        exact = [m.n for m in meta if isinstance(m, Len)]
        return f"bytes{exact[0]}" if exact else "bytes"
    if typing.get_origin(base) is tuple or (isinstance(base, type) and issubclass(base, Wire)):
        return "list"
    return {int: "int", str: "str", bool: "bool"}[base]


def tagged(raw: object) -> object:
    """A record's raw form as JSON the script reads (and prints decoded values as)."""
    if isinstance(raw, bytes):
        return {"bytes": raw.hex()}
    if isinstance(raw, bool) or raw is None or isinstance(raw, str):
        return raw
    if isinstance(raw, int):
        return {"int": str(raw)}
    assert isinstance(raw, list | tuple)
    return [tagged(x) for x in raw]


def test_the_browser_reads_and_signs_every_record_as_the_chain_declares_it(tmp_path):
    """Every record the browser decodes or encodes has the fields, order and kinds of its
    Python class (a field appended on one side, as the currencies merge did to PlaceOrder,
    Tip and Item, fails here), and each one round-trips with Python's bytes both ways."""
    keys = sorted((PrivateKey(bytes([i]) * 32) for i in range(1, 4)), key=lambda k: k.public_key)
    pks = [k.public_key for k in keys]
    who = [bytes([0xA0 + i]) * 20 for i in range(3)]
    commit = make_commit(keys, "web-test-1", 12, 1, bytes(range(32)))
    body = TxBody(7, 1000, 2**32 + 5, "commerce.tip", Tip(3, 500, "great show", "USD").encode())
    tx = sign_tx(keys[0], "web-test-1", body)
    tree = StateTree(MemoryNodeStore())
    update = tree.update(ZERO_REF, {b"\x01" + bytes([i]) * 20: b"v%d" % i for i in range(9)})
    proof = tree.prove(update.ref, b"\x01" + bytes([4]) * 20)
    assert proof.leaf is not None
    ref = item_ref("09506000134352", "SN-1")
    sealed = (bytes([0x11]) * 32, bytes([0x22]) * 32, b"\x33" * 120)
    records = [
        body,
        tx,
        commit.signatures[0],
        commit,
        BlockHeader(
            "web-test-1",
            13,
            0,
            2**53 - 1,
            *(bytes([i]) * 32 for i in range(1, 5)),
            pks[1],
            bytes([9]) * 32,
            commit,
        ),
        EventAttr("amount", "2500"),
        Event("commerce.order_placed", (EventAttr("order", "1"), EventAttr("amount", "2500"))),
        Receipt(tx.hash, "sold_out", "deal 3 has 0 of 10 left", 1000, (Event("tip", ()),)),
        proof.leaf,
        proof,
        ChainParams(),
        GenesisValidator("node0", pks[0], 1, "127.0.0.1:26656"),
        Genesis(
            "web-test-1",
            1_700_000_000_000,
            ChainParams(epoch_length=50),
            (GenesisAccount(who[0], 10**18),),
            (GenesisValidator("node0", pks[0], 1),),
        ),
        ProducerSet(4, 150, tuple(pks), (3, 2, 2**64 - 1)),
        Account(2**60, 3),
        Balance(2**53 + 1),
        Currency("USD", 2, who[1], False, 2**60, 5, 2**60, bytes([7]) * 32, 11, 3),
        CurrencyList(("EUR", "USD")),
        Merchant(who[0], "Acme Kettles", "copper since 1901", sealed[0], 1, 5, 6, 9, 2, 4, 1),
        Session(3, who[0], who[1], 1000, "Kettles live", 1, 5, 0, (1, 2), (4,), 2**40, (6,)),
        Item(
            ref,
            "09506000134352",
            "SN-1",
            who[0],
            who[1],
            who[2],
            1,
            0,
            2,
            1_700_000_000_000,
            "Copper kettle",
            who[1],
            7,
            who[0],
        ),
        ProvenanceEvent(
            1,
            "OBSERVE",
            "shipping",
            "in_transit",
            "urn:acme:plant-1",
            "urn:acme:dock",
            5,
            6,
            7,
            who[0],
            who[0],
            who[1],
            b"",
            bytes(32),
        ),
        PlaceOrder(4, 2, 1, 1999, 3, 5, *sealed, "USD"),
        Tip(3, 500, "great show", "USD"),
        Bid(6, 300, *sealed),
        ShippingAddress(bytes([0x44]) * 32, "Ada Lovelace, 12 Harbour Street"),
    ]
    vectors = {
        type(r).__name__: {"encoding": r.encode().hex(), "raw": tagged(r.to_raw())} for r in records
    }
    done = run_script(tmp_path / "records.mjs", RECORDS_SCRIPT, vectors)
    out = json.loads(done.stdout)
    by_name = {type(r).__name__: type(r) for r in records}
    assert set(out["specs"]) == set(by_name)
    for name, cls in by_name.items():
        hints = typing.get_type_hints(cls, include_extras=True)
        declared = [[f.name, kind_of(hints[f.name])] for f in dataclasses.fields(cls)]
        assert out["specs"][name] == declared, name
    for r in records:
        name = type(r).__name__
        fields = [f.name for f in dataclasses.fields(type(r))]
        assert out["decoded"][name] == dict(zip(fields, tagged(r.to_raw()), strict=True)), name
        assert type(r).decode(bytes.fromhex(out["encoded"][name])) == r, name


HOSTILE_SCRIPT = """
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const lib = (name) => import(pathToFileURL(`${process.argv[2]}/src/lib/${name}.js`).href);
const { unhex, unpack } = await lib("codec");
const light = await lib("light");
const v = JSON.parse(readFileSync(0, "utf8"));
// The page's storage (the genesis pin), in memory.
const store = new Map();
globalThis.localStorage = { getItem: (k) => store.get(k) ?? null, setItem: (k, x) => store.set(k, x) };
// A node that answers every block with its header and certificate of height 0.
const node = async (path) => path.startsWith("/v1/blocks/")
  ? { header: { encoded: v.header }, commit: { encoded: v.commit } }
  : { height: 0, value: null, proof: v.proof };
// Nodes that answer a block with null, or with a certificate and no header.
const blockless = (block) => async (path) => path.startsWith("/v1/blocks/") ? block : { height: 5, value: null, proof: v.proof };
const cases = {
  deep: () => unpack(unhex(v.deep)),
  block_null: () => new light.LightClient(blockless(null), { encoded: v.genesis }).provenValue(unhex("01"), { height: 5, value: null, proof: v.proof }),
  no_header: () => new light.LightClient(blockless({ commit: { encoded: v.commit } }), { encoded: v.genesis }).provenValue(unhex("01"), { height: 5, value: null, proof: v.proof }),
  height0: () => new light.LightClient(node, { encoded: v.genesis }).checkHeader(0, v.header, v.commit),
  value0: () => new light.LightClient(node, { encoded: v.genesis }).provenValue(unhex("01"), { height: 0, value: null, proof: v.proof }),
  // The highest height a page takes: epoch 9e14, whose set was looked for below it one
  // epoch at a time (weeks of a frozen page) before the walk asked for epoch 1.
  far: () => new light.LightClient(node, { encoded: v.genesis }).provenValue(unhex("01"), { height: Number.MAX_SAFE_INTEGER, value: null, proof: v.proof }),
};
const out = {};
for (const [name, run] of Object.entries(cases)) {
  try {
    await run();
    out[name] = "accepted";
  } catch (err) {
    out[name] = light.isVerificationFailure(err) ? "not verified" : `${err.constructor.name}: ${err.message}`;
  }
}
console.log(JSON.stringify(out));
"""


def test_hostile_answers_read_as_not_verified_never_as_another_error(tmp_path):
    """What a node can put in an answer ends as "not verified" (which the pages show), never
    as an error they do not expect: bytes nested deeper than the encoder goes, a block
    answered as null or without its header, and a header of height 0 (no epoch) under a
    staking genesis, certified by its validator, and a state answer at the highest height
    a page takes (2**53 - 1), refused in the epoch walk's first step."""
    key = PrivateKey(bytes([7]) * 32)
    genesis = Genesis(
        "web-test-1",
        1_700_000_000_000,
        ChainParams(epoch_length=10),
        (GenesisAccount(key.public_key[:20], 10**9),),
        (GenesisValidator("node0", key.public_key, 1),),
        GenesisStaking(1),
    )
    header = BlockHeader("web-test-1", 0, 0, 1, *(bytes(32),) * 4, key.public_key, bytes(32), None)
    commit = make_commit([key], "web-test-1", 0, 0, header.hash)
    tree = StateTree(MemoryNodeStore())
    vectors = {
        "deep": "91" * 1000 + "c0",
        "genesis": genesis.encode().hex(),
        "header": header.encode().hex(),
        "commit": commit.encode().hex(),
        "proof": tree.prove(ZERO_REF, b"\x01").encode().hex(),
    }
    done = run_script(tmp_path / "hostile.mjs", HOSTILE_SCRIPT, vectors)
    assert json.loads(done.stdout) == dict.fromkeys(
        ("deep", "block_null", "no_header", "height0", "value0", "far"), "not verified"
    )


TRUST_SCRIPT = """
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const light = await import(pathToFileURL(`${process.argv[2]}/src/lib/light.js`).href);
const v = JSON.parse(readFileSync(0, "utf8"));
const store = new Map();
globalThis.localStorage = {
  getItem: (k) => store.get(k) ?? null,
  setItem: (k, x) => store.set(k, String(x)),
  removeItem: (k) => store.delete(k),
};
const trusts = (encoded) => {
  try {
    return new light.LightClient(async () => ({}), { encoded }).genesisHash;
  } catch (err) {
    return light.isVerificationFailure(err) ? `not verified: ${err.message}` : `${err.constructor.name}`;
  }
};
const out = {};
out.first = trusts(v.a);
out.other_pinned = trusts(v.b);
out.entered = light.trustGenesis(` 0x${v.b_hash.toUpperCase()} `);
out.other_entered = trusts(v.b);
out.first_now = trusts(v.a);
light.forgetTrustedGenesis();
out.after_forget = trusts(v.b);
store.set("liveledger.genesis.trusted.v1", "not a hash");
out.garbage_entry = trusts(v.b);
try { light.trustGenesis("abcd"); out.short = "accepted"; } catch (err) { out.short = err.message; }
console.log(JSON.stringify(out));
"""


def test_the_light_client_trusts_the_genesis_hash_entered_over_its_pin(tmp_path):
    """Without an entered hash the first genesis seen for a chain id is pinned; a hash the
    user entered (as people pass it on: 0x, upper case, spaces) trusts only the document
    hashing to it, replaces the pin, and refuses any other by name."""
    key = PrivateKey(bytes([7]) * 32)
    a = Genesis(
        "web-test-1",
        1_700_000_000_000,
        ChainParams(),
        (GenesisAccount(key.public_key[:20], 10**9),),
        (GenesisValidator("node0", key.public_key, 1),),
    )
    b = dataclasses.replace(a, genesis_time_ms=a.genesis_time_ms + 1)
    vectors = {"a": a.encode().hex(), "b": b.encode().hex(), "b_hash": b.hash.hex()}
    done = run_script(tmp_path / "trust.mjs", TRUST_SCRIPT, vectors)
    out = json.loads(done.stdout)
    ha, hb = a.hash.hex(), b.hash.hex()
    assert out["first"] == ha
    assert out["other_pinned"].startswith("not verified: this node's genesis")
    assert out["entered"] == hb
    assert out["other_entered"] == hb
    assert out["first_now"] == (
        f"not verified: this node's genesis ({ha[:12]}…) does not match the hash you "
        f"entered ({hb[:12]}…)"
    )
    # The entered hash replaced the pin: b stays trusted once it is forgotten.
    assert out["after_forget"] == hb
    assert out["garbage_entry"] == hb
    assert out["short"] == "a genesis hash is 64 hexadecimal digits"


HEIGHT_SCRIPT = """
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const lib = (name) => import(pathToFileURL(`${process.argv[2]}/src/lib/${name}.js`).href);
const { unhex } = await lib("codec");
const light = await lib("light");
const v = JSON.parse(readFileSync(0, "utf8"));
const store = new Map();
globalThis.localStorage = { getItem: (k) => store.get(k) ?? null, setItem: (k, x) => store.set(k, x) };
// A node that answers every read at the one height it likes, with a valid proof there.
const node = async (path) => path.startsWith("/v1/blocks/")
  ? { header: { encoded: v.header }, commit: { encoded: v.commit } }
  : { height: v.height, value: v.value, proof: v.proof };
const client = new light.LightClient(node, { encoded: v.genesis });
const read = async (height) => {
  try {
    const { value, header } = await client.provenState(unhex(v.key), height);
    return `proven ${value === null ? "absent" : "present"} at ${header.height}`;
  } catch (err) {
    return light.isVerificationFailure(err) ? `not verified: ${err.message}` : `${err.constructor.name}`;
  }
};
const recent = async () => {
  try {
    const { header } = await client.provenRecentState(unhex(v.key));
    return `proven at ${header.height}`;
  } catch (err) {
    return light.isVerificationFailure(err) ? `not verified: ${err.message}` : `${err.constructor.name}`;
  }
};
console.log(JSON.stringify({
  head: await read(null), same: await read(v.height), other: await read(v.height - 1),
  recent: await recent(),
}));
"""


def test_a_read_at_a_height_refuses_an_answer_at_another(tmp_path):
    """``provenState(key, height)`` proves the key at that height or not at all: a node
    answering at another final height (an older merchant key, another block's
    decimals) is refused, though its proof verifies there, as cli/light.py refuses it."""
    key = PrivateKey(bytes([7]) * 32)
    genesis = Genesis(
        "web-test-1",
        1_700_000_000_000,
        ChainParams(),
        (GenesisAccount(key.public_key[:20], 10**9),),
        (GenesisValidator("node0", key.public_key, 1),),
    )
    state_key = b"\x24" + bytes([5]) * 20
    tree = StateTree(MemoryNodeStore())
    update = tree.update(ZERO_REF, {state_key: b"old key"})
    header = BlockHeader(
        "web-test-1", 7, 0, 1, bytes(32), bytes(32), update.root, bytes(32),
        key.public_key, ValidatorSet.of([key.public_key]).hash, None,
    )  # fmt: skip
    commit = make_commit([key], "web-test-1", 7, 0, header.hash)
    vectors = {
        "genesis": genesis.encode().hex(),
        "header": header.encode().hex(),
        "commit": commit.encode().hex(),
        "height": 7,
        "key": state_key.hex(),
        "value": b"old key".hex(),
        "proof": tree.prove(update.ref, state_key).encode().hex(),
    }
    out = json.loads(run_script(tmp_path / "height.mjs", HEIGHT_SCRIPT, vectors).stdout)
    assert out == {
        "head": "proven present at 7",
        "same": "proven present at 7",
        "other": "not verified: asked for height 6, the node answered at 7",
        # The block is dated 1 ms after the epoch: the wallet seals to no key read there.
        "recent": "not verified: the node answered at height 7, a block of "
        f"{out['recent'].split(' of ')[-1]}",
    }
    age_s = int(out["recent"].split(" of ")[-1].split(" s ago")[0])
    assert age_s > 1_700_000_000


TX_PROOF_SCRIPT = """
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const lib = (name) => import(pathToFileURL(`${process.argv[2]}/src/lib/${name}.js`).href);
const { unhex } = await lib("codec");
const light = await lib("light");
const v = JSON.parse(readFileSync(0, "utf8"));
const header = light.decodeHeader(unhex(v.header));
const out = {};
const bounds = [light.MAX_TX_PATH, light.MAX_BLOCK_TXS];
for (const [name, doc] of Object.entries(v.answers)) {
  try {
    const receipt = light.verifyTxInclusion(header, unhex(v.hash), doc);
    out[name] = `proven ${receipt.code} ${receipt.events.map((e) => e.kind).join(",")}`;
  } catch (err) {
    out[name] = light.isVerificationFailure(err) ? "not verified" : `${err.constructor.name}: ${err.message}`;
  }
}
console.log(JSON.stringify({ bounds, out }));
"""


def test_the_browser_proves_a_transaction_and_its_receipt_as_the_chain_does(tmp_path):
    """``verifyTxInclusion`` (web/src/lib/light.js) takes the proof ``vm.verify_tx_inclusion``
    takes, at every place of blocks of several sizes, and refuses every answer it refuses:
    another place, another transaction or its receipt, paths of another shape or size, a
    proof of another block, a receipt that names another transaction."""
    key = PrivateKey(bytes([7]) * 32)
    answers: dict[str, dict] = {}

    def block(count: int, receipt_of=lambda i: i):
        txs = [
            sign_tx(key, "web-test-1", TxBody(i, 10, 99, "transfer", b"\x90")).encode()
            for i in range(count)
        ]
        receipts = [
            Receipt(tx_hash(txs[receipt_of(i)]), "ok" if i % 3 else "sold_out", "", 10,
                    (Event(f"e{i}", ()),)).encode()
            for i in range(count)
        ]  # fmt: skip
        roots = (merkle_root(txs), bytes(32), merkle_root(receipts))
        header = BlockHeader(
            "web-test-1", 5, 0, 1, bytes(32), *roots, key.public_key, bytes(32), None
        )
        return header, txs, receipts

    def answer(txs, receipts, index, **lie):
        doc = {
            "height": 5,
            "index": index,
            "count": len(txs),
            "tx": txs[index].hex(),
            "receipt": receipts[index].hex(),
            "tx_path": [h.hex() for h in MerkleTree.of(txs).path(index)],
            "receipt_path": [h.hex() for h in MerkleTree.of(receipts).path(index)],
        }
        return {**doc, **lie}

    header, txs, receipts = block(11)
    asked = tx_hash(txs[6])
    other = answer(txs, receipts, 5)
    honest = answer(txs, receipts, 6)
    answers = {
        "honest": honest,
        "wrong_index": {**honest, "index": 5},
        "another_tx": other,
        "another_tx_path": {**honest, "tx_path": other["tx_path"]},
        "another_receipt": {**honest, "receipt": other["receipt"]},
        "another_receipt_with_path": {
            **honest,
            "receipt": other["receipt"],
            "receipt_path": other["receipt_path"],
        },
        "path_too_long": {**honest, "tx_path": [*honest["tx_path"], "00" * 32]},
        "path_too_short": {**honest, "receipt_path": honest["receipt_path"][:-1]},
        "hash_odd_length": {**honest, "tx_path": ["00" * 31, *honest["tx_path"][1:]]},
        "oversized_path": {**honest, "receipt_path": ["zz"] * 100_000},
        "count_over_block": {**honest, "count": MAX_BLOCK_TXS + 1},
        "another_height": {**honest, "height": 6},
        "not_an_object": None,
    }
    vectors = {"header": header.encode().hex(), "hash": asked.hex(), "answers": answers}
    done = json.loads(run_script(tmp_path / "txproof.mjs", TX_PROOF_SCRIPT, vectors).stdout)
    # The bounds the chain's: a block's most transactions, and the path of a full block.
    assert done["bounds"] == [MAX_TX_PATH, MAX_BLOCK_TXS]
    out = done["out"]
    assert out.pop("honest") == "proven sold_out e6"
    assert out == dict.fromkeys(out, "not verified") and len(out) == len(answers) - 1
    # Every place of blocks of 1 to 9 transactions, as Python proves them.
    for count in range(1, 10):
        header, txs, receipts = block(count)
        for index in range(count):
            verify_tx_inclusion(
                header,
                tx_hash(txs[index]),
                TxInclusion(5, index, count, txs[index], receipts[index],
                            tuple(MerkleTree.of(txs).path(index)),
                            tuple(MerkleTree.of(receipts).path(index))),
            )  # fmt: skip
            vectors = {
                "header": header.encode().hex(),
                "hash": tx_hash(txs[index]).hex(),
                "answers": {"honest": answer(txs, receipts, index)},
            }
            done = run_script(tmp_path / "txproof.mjs", TX_PROOF_SCRIPT, vectors)
            assert json.loads(done.stdout)["out"]["honest"].startswith("proven"), (count, index)
    # A block whose receipt at a place names another transaction.
    header, txs, receipts = block(4, receipt_of=lambda i: 3 - i)
    vectors = {
        "header": header.encode().hex(),
        "hash": tx_hash(txs[1]).hex(),
        "answers": {"named_other": answer(txs, receipts, 1)},
    }
    done = run_script(tmp_path / "txproof.mjs", TX_PROOF_SCRIPT, vectors)
    assert json.loads(done.stdout)["out"] == {"named_other": "not verified"}


SKIP_SCRIPT = """
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const lib = (name) => import(pathToFileURL(`${process.argv[2]}/src/lib/${name}.js`).href);
const { hex } = await lib("codec");
const light = await lib("light");
const v = JSON.parse(readFileSync(0, "utf8"));
const store = new Map();
globalThis.localStorage = { getItem: (k) => store.get(k) ?? null, setItem: (k, x) => store.set(k, x) };
const out = {};
for (const [name, answers] of Object.entries(v.cases)) {
  store.clear();
  const asked = [];
  // A node answering from the chain's answers; a refusal as api.js throws it.
  const api = async (path) => {
    asked.push(path);
    const answer = answers[path] ?? { error: { status: 404, code: "not_found" } };
    if (answer.error) throw Object.assign(new Error(answer.error.code), answer.error);
    return answer;
  };
  try {
    const client = new light.LightClient(api, { encoded: v.genesis });
    const set = await client.producersAt(v.height);
    await client.certifiedHeader(v.height, set);
    out[name] = { verdict: "accepted", set: set.map(hex), epochs: asked.filter((p) => p.startsWith("/v1/epochs/")) };
  } catch (err) {
    out[name] = { verdict: light.isVerificationFailure(err) ? "refused" : `${err.constructor.name}: ${err.message}` };
  }
}
console.log(JSON.stringify(out));
"""


def test_the_browser_skips_to_each_change_of_producers_and_refuses_what_python_refuses(
    tmp_path,
):
    """The walk by changes of producers (GET /v1/epochs/{e}/next-change) in the browser's
    code and in cli/light.py, over the same answers of a chain whose producers change
    twice in twelve epochs: an honest node (three answers, two records), an older node
    without the route (every epoch's record), and nodes that hide a change, skip one or
    serve a record whose header names another set than its signers': both accept the
    same, read the same, and refuse the same."""
    from cli.light import fetch_certified_header, producers_at
    from core import Invalid
    from core.keystore import load_key
    from genesis import create_localnet
    from tests.cli.light_chain import EPOCHS_OF_3, LAST, FakeChain, answers, height_of

    layout = create_localnet(tmp_path / "net", 1, "", params=EPOCHS_OF_3)
    genesis, first = layout.genesis, load_key(layout.nodes[0].key_path, "")
    height = height_of(LAST)
    cases, python = {}, {}
    for lie in (None, "no-route", "hide", "skip", "other-set"):
        chain = FakeChain(genesis, first, lie)
        name = lie or "honest"
        cases[name] = answers(chain, height)
        try:
            producers = producers_at(chain, genesis, height)
            fetch_certified_header(chain, genesis, height, producers)
            python[name] = {
                "verdict": "accepted",
                "set": [k.hex() for k in producers.keys],
                "epochs": chain.paths,
            }
        except Invalid:
            python[name] = {"verdict": "refused"}
    vectors = {"genesis": genesis.encode().hex(), "height": height, "cases": cases}
    done = run_script(tmp_path / "skip.mjs", SKIP_SCRIPT, vectors)
    browser = json.loads(done.stdout)
    assert browser == python
    assert python["honest"]["epochs"] == [
        "/v1/epochs/0/next-change",
        "/v1/epochs/4/next-change",
        "/v1/epochs/8/next-change",
    ]
    assert len(python["no-route"]["epochs"]) == 1 + LAST
    assert [python[n]["verdict"] for n in ("hide", "skip", "other-set")] == ["refused"] * 3


RESUME_SCRIPT = """
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const lib = (name) => import(pathToFileURL(`${process.argv[2]}/src/lib/${name}.js`).href);
const light = await lib("light");
const v = JSON.parse(readFileSync(0, "utf8"));
const store = new Map();
globalThis.localStorage = { getItem: (k) => store.get(k) ?? null, setItem: (k, x) => store.set(k, x) };
const out = {};
for (const [name, { answers, busy }] of Object.entries(v.cases)) {
  store.clear();
  let asked = [];
  let busyOnce = busy;
  // A node answering from the chain's answers, busy (503) once at `busy`.
  const api = async (path) => {
    asked.push(path);
    if (path === busyOnce) {
      busyOnce = null;
      throw Object.assign(new Error("busy"), { status: 503, code: "busy" });
    }
    const answer = answers[path] ?? { error: { status: 404, code: "not_found" } };
    if (answer.error) throw Object.assign(new Error(answer.error.code), answer.error);
    return answer;
  };
  const kept = () => [...store.entries()].filter(([k]) => k.startsWith("liveledger.producers.v1.")).map(([, x]) => JSON.parse(x).epoch);
  let first;
  try {
    await new light.LightClient(api, { encoded: v.genesis }).producersAt(v.height);
    first = "accepted";
  } catch (err) {
    first = err.code ?? err.message;
  }
  const afterInterrupt = kept();
  asked = [];
  // The next load (a new client, as a reload makes) resumes from what was kept.
  await new light.LightClient(api, { encoded: v.genesis }).producersAt(v.height);
  out[name] = { first, kept: afterInterrupt, resumed: asked, final: kept() };
}
console.log(JSON.stringify(out));
"""


def test_an_interrupted_browser_walk_resumes_from_the_last_change_it_verified(tmp_path):
    """The browser's walk (producersAt) kept what it reached only when it ended: one a
    busy node or a timeout interrupted started over from genesis at the next load. Each
    change verified is kept as it is, the same epochs cli/light.py keeps."""
    from cli.client import NodeError
    from cli.light import producers_at
    from core.keystore import load_key
    from genesis import create_localnet
    from tests.cli.light_chain import EPOCHS_OF_3, LAST, answers, height_of
    from tests.cli.test_light_skip import BusyAt, MemoryStore

    layout = create_localnet(tmp_path / "net", 1, "", params=EPOCHS_OF_3)
    genesis, first = layout.genesis, load_key(layout.nodes[0].key_path, "")
    height = height_of(LAST)
    cases, python = {}, {}
    for lie, busy in ((None, "/v1/epochs/4/next-change"), ("no-route", "/v1/epochs/6")):
        chain = BusyAt(genesis, first, lie, set())
        cases[lie or "honest"] = {"answers": answers(chain, height), "busy": busy}
        chain.busy.add(busy)
        store = MemoryStore()
        with pytest.raises(NodeError, match="busy"):
            producers_at(chain, genesis, height, store)
        python[lie or "honest"] = [c.epoch for c in store.saved]
    vectors = {"genesis": genesis.encode().hex(), "height": height, "cases": cases}
    out = json.loads(run_script(tmp_path / "resume.mjs", RESUME_SCRIPT, vectors).stdout)
    assert python == {"honest": [4], "no-route": [4]}
    assert out["honest"] == {
        "first": "busy",
        "kept": [4],
        "resumed": ["/v1/epochs/4/next-change", "/v1/epochs/8/next-change"],
        "final": [8],
    }
    # From epoch 4 on: its next-change (no route), then epochs 5 to the last.
    assert out["no-route"] == {
        "first": "busy",
        "kept": [4],
        "resumed": ["/v1/epochs/4/next-change"] + [f"/v1/epochs/{e}" for e in range(5, LAST + 1)],
        "final": [LAST],
    }


WAIT_SCRIPT = """
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const lib = (name) => import(pathToFileURL(`${process.argv[2]}/src/lib/${name}.js`).href);
const v = JSON.parse(readFileSync(0, "utf8"));
const store = new Map();
globalThis.localStorage = {
  getItem: (k) => store.get(k) ?? null, setItem: (k, x) => store.set(k, x), removeItem: (k) => store.delete(k),
};
// The page's clock, moved on by the node's slow answers; the page's own pauses (a
// second at most) pass at once, the answer deadline (api.js) as it does.
let now = 0;
Object.defineProperty(globalThis, "performance", { value: { now: () => now }, configurable: true });
const realTimeout = globalThis.setTimeout;
globalThis.setTimeout = (fn, ms, ...args) => (ms <= 1000 ? setImmediate(fn, ...args) : realTimeout(fn, ms, ...args));
const wallet = await lib("wallet");
let mode = null;
const asked = { status: 0, proof: 0 };
const json = (doc, status = 200) => new Response(JSON.stringify(doc), { status, headers: { "Content-Type": "application/json" } });
globalThis.fetch = async (path) => {
  if (path === "/v1/genesis") return json({ encoded: v.genesis });
  if (path === "/v1/status") return json({ height: 5 });
  if (path.startsWith("/v1/accounts/")) return json({ next_nonce: 0 });
  if (path === "/v1/txs/simulate") return json({ receipt: { code: "ok" } });
  if (path === "/v1/txs") return json({ hash: "ab".repeat(32) });
  // Each answer about the transaction comes just under the answer deadline (29 s).
  now += 29_000;
  if (path.endsWith("/proof")) {
    asked.proof++;
    return json({ code: "busy", message: "busy" }, 503);
  }
  asked.status++;
  if (mode === "pending") return json({ hash: path.slice(8), status: "pending" });
  return json({ hash: path.slice(8), status: "committed", height: 5, receipt: { code: "ok", events: [] } });
};
await wallet.createWallet("a passphrase");
const out = {};
for (const m of ["pending", "committed"]) {
  mode = m;
  now = 0;
  asked.status = asked.proof = 0;
  try {
    const done = await wallet.send("transfer", Uint8Array.of(0x90));
    out[m] = { result: `verified ${done.verified}`, ...asked, seconds: now / 1000 };
  } catch (err) {
    out[m] = { result: err.code ?? err.message, ...asked, seconds: now / 1000 };
  }
}
out.waits = [wallet.COMMIT_WAIT_MS, wallet.PROOF_WAIT_MS];
console.log(JSON.stringify(out));
"""


def test_the_wallet_waits_for_a_transaction_on_the_clock_not_by_counting_answers(tmp_path):
    """The wallet waited for a committed transaction 240 answers, and for its proof 30: a
    node answering each just under the answer deadline (30 s) held the page ~2 hours
    (and 15 minutes). It waits a minute, then 30 s, on the clock, as the CLI does."""
    key = PrivateKey(bytes([7]) * 32)
    genesis = Genesis(
        "web-test-1",
        1_700_000_000_000,
        ChainParams(),
        (GenesisAccount(key.public_key[:20], 10**9),),
        (GenesisValidator("node0", key.public_key, 1),),
    )
    vectors = {"genesis": genesis.encode().hex()}
    out = json.loads(run_script(tmp_path / "wait.mjs", WAIT_SCRIPT, vectors).stdout)
    assert out.pop("waits") == [60_000, 30_000]
    # Answers at 29, 58 and 87 s: none after the minute (the last began before it).
    assert out["pending"] == {"result": "timeout", "status": 3, "proof": 0, "seconds": 87}
    # Committed, then two proofs refused as busy (29 and 58 s): its word, unverified.
    assert out["committed"] == {
        "result": "verified false",
        "status": 1,
        "proof": 2,
        "seconds": 87,
    }


UNKNOWN_TX_SCRIPT = """
import { pathToFileURL } from "node:url";
const page = await import(pathToFileURL(`${process.argv[2]}/src/pages/explorer.js`).href);
const codes = ["not_found", "maybe_pruned", "http_error"];
console.log(JSON.stringify(Object.fromEntries(codes.map((c) => [c, page.unknownTxText(c)]))));
"""


def test_the_transaction_page_tells_a_pruning_node_s_unknown_from_never_included(tmp_path):
    """The explorer's transaction page said the same for `not_found` (a node that holds
    every block: never included) and `maybe_pruned` (a node that pruned: a block gone
    from it may hold it). For the latter it says so and that an archive node can tell.
    (The page's sentence under Node.js: the e2e world has no pruning node.)"""
    out = json.loads(run_script(tmp_path / "unknown.mjs", UNKNOWN_TX_SCRIPT, {}).stdout)
    assert "keeps every block" in out["not_found"]
    assert "prunes" not in out["not_found"]
    assert "prunes them" in out["maybe_pruned"] and "An archive node" in out["maybe_pruned"]
    assert "state sync" in out["maybe_pruned"]
    assert len(set(out.values())) == 3
