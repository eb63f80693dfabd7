"""The web app's chain code (web/src/lib) against Python's, byte for byte, under Node.js.

One ``node`` process runs the browser's modules on vectors made here: the canonical codec
(integers at every msgpack width, strings and bytes at their header boundaries, nested
nil), signed transactions, state proofs of presence and absence, commit certificates
and the sealed shipping address. Each must equal or pass what Python makes and checks,
and each one-byte change must be refused. Needs ``node`` and web/node_modules
(``make web``); skips saying which is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import nacl.public
import pytest

from apps.commerce.sealing import open_address
from consensus import ValidatorSet, make_commit
from core import PrivateKey, TxBody, pack_raw, sign_tx
from core.hashing import ZERO_HASH
from storage import MemoryNodeStore, StateTree
from tests.e2e.helpers import REPO

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
    root = tree.update(ZERO_HASH, state).root
    proofs = []
    for k in (bytes([0x01]) + bytes([5]) * 20, bytes([0x01]) + bytes([33]) * 20, b"\x01absent"):
        value = state.get(k)
        proofs.append(
            {
                "root": root.hex(),
                "key": k.hex(),
                "value": None if value is None else value.hex(),
                "proof": tree.prove(root, k).encode().hex(),
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
    script = tmp_path / "check.mjs"
    script.write_text(SCRIPT)
    done = subprocess.run(
        ["node", str(script), str(WEB)],
        input=json.dumps(vectors),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["repacked"] == encodings
    assert out["refused"] == [True] * len(noncanonical)
    assert out["tx"] == tx.encode().hex()
    # Present, present and absent: each verifies; a changed proof or value does not.
    assert out["proofs"] == [[True, False, False], [True, False, False], [True, False, True]]
    # 3 of 4 producers: final; a changed signature or 2 of 4: not.
    assert out["commit"] == [True, False, False]
    sealed = out["sealed"]
    opened = open_address(
        bytes(merchant), bytes.fromhex(sealed["ciphertext"]), bytes.fromhex(sealed["commitment"])
    )
    assert opened == text
