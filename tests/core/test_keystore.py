import json
import logging
import os
import stat
import unicodedata

import pytest

from core import PrivateKey, address_of, format_address, keystore
from core.keystore import (
    DEFAULT_MEMLIMIT,
    DEFAULT_OPSLIMIT,
    KeyExists,
    KeyInfo,
    KeystoreError,
    WrongPassphrase,
    atomic_write,
    decrypt_seed,
    encrypt_seed,
    key_info,
    load_key,
    read_key_info,
    save_key,
)
from tests.fifos import fifo_holding

# The cheapest Argon2id limits libsodium allows: most tests are about the file
# format, not the KDF cost. One test below exercises the defaults.
FAST = {"opslimit": 1, "memlimit": 8192}
PASS = "correct horse battery staple"
SEED = bytes(range(32))


def fast_doc(seed=SEED, passphrase=PASS, name="alice"):
    return encrypt_seed(seed, passphrase, name=name, **FAST)


def save_fast(path, key, passphrase=PASS, name="alice"):
    return save_key(path, key, passphrase, name, **FAST)


def test_round_trip_with_default_limits():
    doc = encrypt_seed(SEED, PASS, name="alice")
    assert doc["kdf"]["opslimit"] == DEFAULT_OPSLIMIT
    assert doc["kdf"]["memlimit"] == DEFAULT_MEMLIMIT
    assert decrypt_seed(doc, PASS) == SEED


def test_document_shape():
    doc = fast_doc()
    key = PrivateKey(SEED)
    assert set(doc) == {
        "version",
        "name",
        "address",
        "public_key",
        "kdf",
        "nonce",
        "ciphertext",
    }
    assert doc["version"] == 1
    assert doc["name"] == "alice"
    assert doc["public_key"] == key.public_key.hex()
    assert doc["address"] == format_address(address_of(key.public_key))
    assert doc["kdf"]["alg"] == "argon2id"
    assert len(bytes.fromhex(doc["kdf"]["salt"])) == 16
    assert len(bytes.fromhex(doc["nonce"])) == 24
    assert len(bytes.fromhex(doc["ciphertext"])) == 32 + 16
    # JSON-ready as is.
    assert json.loads(json.dumps(doc)) == doc


def test_fresh_salt_and_nonce_every_time():
    a, b = fast_doc(), fast_doc()
    assert a["kdf"]["salt"] != b["kdf"]["salt"]
    assert a["nonce"] != b["nonce"]
    assert a["ciphertext"] != b["ciphertext"]


def test_empty_passphrase_allowed():
    assert decrypt_seed(fast_doc(passphrase=""), "") == SEED


def test_passphrase_unicode_normalised():
    composed = unicodedata.normalize("NFC", "pässwörd")
    decomposed = unicodedata.normalize("NFD", "pässwörd")
    assert composed != decomposed
    assert decrypt_seed(fast_doc(passphrase=composed), decomposed) == SEED


def test_wrong_passphrase():
    doc = fast_doc()
    with pytest.raises(WrongPassphrase) as info:
        decrypt_seed(doc, PASS + "!")
    assert "wrong passphrase" in str(info.value)
    assert "alice" in str(info.value)
    assert PASS not in str(info.value)
    # Not chained to libsodium's error: nothing there helps the user.
    assert info.value.__cause__ is None


@pytest.mark.parametrize("field", ["ciphertext", "nonce", "salt"])
def test_tampered_ciphertext_nonce_or_salt_refused(field):
    doc = fast_doc()
    holder = doc["kdf"] if field == "salt" else doc
    raw = bytearray.fromhex(holder[field])
    raw[0] ^= 1
    holder[field] = raw.hex()
    with pytest.raises(WrongPassphrase):
        decrypt_seed(doc, PASS)


def test_swapped_public_part_refused():
    # Someone replaces the clear public key and address by their own: the file
    # would show the wrong address, so decryption must refuse it.
    doc = fast_doc()
    other = PrivateKey(bytes(32))
    doc["public_key"] = other.public_key.hex()
    doc["address"] = format_address(other.address)
    with pytest.raises(KeystoreError, match="does not match its public key"):
        decrypt_seed(doc, PASS)


def test_address_not_matching_public_key_refused():
    doc = fast_doc()
    doc["address"] = format_address(bytes(20))
    with pytest.raises(KeystoreError, match="address does not match"):
        key_info(doc)


def test_changed_kdf_limits_refused():
    doc = fast_doc()
    doc["kdf"]["opslimit"] = 2
    with pytest.raises(WrongPassphrase):
        decrypt_seed(doc, PASS)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("nonce"), "missing field"),
        (lambda d: d.update(extra=1), "unknown field"),
        (lambda d: d.update(version=2), "unsupported key file version"),
        (lambda d: d.update(version=True), "unsupported key file version"),
        (lambda d: d.update(name=""), "non-empty"),
        (lambda d: d.update(name="x" * 65), "at most 64"),
        (lambda d: d.update(public_key="zz"), "not valid hex"),
        (lambda d: d.update(public_key="00" * 31), "expected 32 bytes"),
        (lambda d: d.update(address="ll1notanaddress"), "bad address"),
        (lambda d: d.update(kdf=[]), "must be an object"),
        (lambda d: d["kdf"].update(alg="scrypt"), "unsupported kdf"),
        (lambda d: d["kdf"].pop("salt"), "missing field"),
        (lambda d: d["kdf"].update(memlimit=2**40), "memlimit"),
        (lambda d: d["kdf"].update(opslimit=10**6), "opslimit"),
        (lambda d: d["kdf"].update(opslimit=2.0), "opslimit"),
        (lambda d: d.update(ciphertext="00" * 10), "expected 48 bytes"),
        (lambda d: d.update(name=5), "field 'name' must be a string"),
        (lambda d: d.update(nonce=5), "field 'nonce' must be a hex string"),
        (lambda d: d["kdf"].update(salt=None), "field 'kdf.salt' must be a hex string"),
    ],
)
def test_malformed_documents_refused_before_any_kdf(mutate, message):
    doc = fast_doc()
    mutate(doc)
    with pytest.raises(KeystoreError, match=message):
        decrypt_seed(doc, PASS)


def test_not_a_dict():
    with pytest.raises(KeystoreError, match="JSON object"):
        decrypt_seed([], PASS)


def test_a_passphrase_that_is_not_text_is_refused_by_name():
    # Bytes would be "normalised" by no one: which encoding the user typed is unknown.
    with pytest.raises(TypeError, match="passphrase must be a str"):
        decrypt_seed(fast_doc(), PASS.encode())  # type: ignore[arg-type]  # deliberately bytes
    with pytest.raises(TypeError, match="passphrase must be a str"):
        encrypt_seed(SEED, None, name="a", **FAST)  # type: ignore[arg-type]  # deliberately None


def test_encrypt_argument_checks():
    with pytest.raises(KeystoreError, match="32 bytes"):
        encrypt_seed(b"short", PASS, name="a", **FAST)
    with pytest.raises(KeystoreError, match="memlimit"):
        encrypt_seed(SEED, PASS, name="a", opslimit=1, memlimit=1)


# --- files ---


def test_save_and_load(tmp_path):
    key = PrivateKey(SEED)
    path = tmp_path / "alice.json"
    info = save_fast(path, key)
    assert info == KeyInfo("alice", format_address(key.address), key.public_key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(path, PASS).seed == SEED
    assert read_key_info(path) == info
    # Only the key file: no temporary file left behind.
    assert [p.name for p in tmp_path.iterdir()] == ["alice.json"]


def test_save_with_default_limits_and_load(tmp_path):
    key = PrivateKey.generate()
    path = tmp_path / "k.json"
    save_key(path, key, PASS, "k")
    assert load_key(path, PASS).public_key == key.public_key


def test_save_refuses_to_overwrite(tmp_path):
    path = tmp_path / "alice.json"
    save_fast(path, PrivateKey(SEED))
    before = path.read_bytes()
    with pytest.raises(KeyExists, match="already exists"):
        save_fast(path, PrivateKey.generate())
    assert path.read_bytes() == before
    assert len(list(tmp_path.iterdir())) == 1


def test_atomic_write_no_overwrite_is_atomic(tmp_path):
    # The guarantee comes from link(), not from the exists() pre-check in save_key.
    path = tmp_path / "f"
    path.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        atomic_write(path, b"new", overwrite=False)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_save_refuses_a_file_made_while_it_encrypted(tmp_path, monkeypatch):
    # The early check passed, then another process created the file: the link in
    # atomic_write refuses it, and that is still "already exists", nothing written.
    path = tmp_path / "alice.json"
    real_encrypt = keystore.encrypt_seed

    def racing(*args, **kwargs):
        path.write_bytes(b"theirs")
        return real_encrypt(*args, **kwargs)

    monkeypatch.setattr(keystore, "encrypt_seed", racing)
    with pytest.raises(KeyExists, match="already exists"):
        save_fast(path, PrivateKey(SEED))
    assert path.read_bytes() == b"theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["alice.json"]


def test_atomic_write_interrupted_after_its_rename_reports_the_interruption(tmp_path, monkeypatch):
    # The temporary file already has the final name: cleaning it up finds nothing,
    # and what is raised is what interrupted the write, not that.
    path = tmp_path / "f"
    real_replace = os.replace

    def replace_then_interrupted(src, dst):
        real_replace(src, dst)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", replace_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_atomic_write_replaces_and_sets_mode(tmp_path):
    path = tmp_path / "f"
    atomic_write(path, b"one", mode=0o644)
    atomic_write(path, b"two", mode=0o644)
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_save_into_missing_directory(tmp_path):
    with pytest.raises(KeystoreError, match="cannot write key file"):
        save_fast(tmp_path / "nope" / "k.json", PrivateKey(SEED))


def test_load_wrong_passphrase(tmp_path):
    path = tmp_path / "alice.json"
    save_fast(path, PrivateKey(SEED))
    with pytest.raises(WrongPassphrase):
        load_key(path, "nope")


def test_load_missing_file(tmp_path):
    with pytest.raises(KeystoreError, match="does not exist"):
        load_key(tmp_path / "missing.json", PASS)


def test_load_a_path_that_cannot_be_read(tmp_path):
    with pytest.raises(KeystoreError, match="cannot read key file .*: Is a directory"):
        load_key(tmp_path, PASS)


def test_load_not_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(KeystoreError, match="not valid JSON"):
        load_key(path, PASS)


@pytest.mark.parametrize("text", [b"[" * 60_000, b'{"name": "\xff"}'])
def test_load_json_the_decoder_cannot_take(tmp_path, text):
    # Under the size cap, "[[[[..." exhausts the decoder's recursion limit: a key file
    # error naming the file, not a RecursionError ("unexpected failure" in the CLI).
    path = tmp_path / "deep.json"
    path.write_bytes(text)
    with pytest.raises(KeystoreError, match=r"deep\.json is not a key file: not valid JSON"):
        read_key_info(path)


def test_load_names_file_on_bad_structure(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"version": 1}))
    with pytest.raises(KeystoreError, match=r"bad\.json.*missing field"):
        read_key_info(path)


def test_load_huge_file_refused(tmp_path):
    path = tmp_path / "big.json"
    path.write_bytes(b" " * (1 << 20))
    with pytest.raises(KeystoreError, match="larger than"):
        read_key_info(path)


def test_warns_when_others_can_read(tmp_path, caplog):
    path = tmp_path / "alice.json"
    save_fast(path, PrivateKey(SEED))
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="core.keystore"):
        load_key(path, PASS)
    assert "accessible by other users" in caplog.text


def test_no_secret_anywhere(tmp_path, caplog):
    key = PrivateKey(SEED)
    seed_hex = SEED.hex()
    path = tmp_path / "alice.json"
    with caplog.at_level(logging.DEBUG):
        info = save_fast(path, key)
        os.chmod(path, 0o640)
        loaded = load_key(path, PASS)
        try:
            load_key(path, "wrong " + PASS)
        except WrongPassphrase as exc:
            error = exc
    texts = [
        repr(key),
        str(key),
        repr(loaded),
        str(loaded),
        repr(info),
        str(info),
        repr(error),
        str(error),
        path.read_text(),
        json.dumps(fast_doc()),
        caplog.text,
    ]
    for text in texts:
        assert seed_hex not in text
        assert seed_hex.upper() not in text
        assert PASS not in text


def test_a_key_file_that_is_not_a_regular_file_is_refused_unread(tmp_path):
    # A FIFO would block the command for ever; /dev/zero would be read to the bound.
    with fifo_holding(tmp_path / "key.fifo", keystore.MAX_FILE_BYTES + 1) as fifo:
        with pytest.raises(
            KeystoreError, match=f"key file {fifo} is not a regular file but a FIFO"
        ):
            read_key_info(fifo)
    with pytest.raises(KeystoreError, match="/dev/zero is not a regular file but a character"):
        load_key("/dev/zero", PASS)
