import json
import stat

import pytest
from click.testing import CliRunner

from cli.keyring import (
    PASSPHRASE_ENV,
    InvalidKeyName,
    KeyNotFound,
    Keyring,
    passphrase_from_env_or_prompt,
)
from cli.keys import keys
from core import parse_address
from core.keystore import KeyExists, KeystoreError, WrongPassphrase
from tests.fsyncs import dir_id, fsynced_dirs

PASS = "devnet passphrase"


@pytest.fixture
def runner():
    return CliRunner()


def run(runner, *args, passphrase=PASS, input=None):
    # None removes the variable, so the command has to prompt.
    env = {PASSPHRASE_ENV: passphrase, "LIVELEDGER_KEYRING": None}
    return runner.invoke(keys, list(args), env=env, input=input)


def test_new_show_list(runner, tmp_path):
    ring = tmp_path / "ring"
    created = run(runner, "new", "alice", "--keyring", str(ring))
    assert created.exit_code == 0, created.output
    address = created.stdout.strip()
    parse_address(address)

    shown = run(runner, "show", "alice", "--keyring", str(ring))
    assert shown.exit_code == 0
    assert shown.stdout.strip() == address

    as_json = run(runner, "show", "alice", "--keyring", str(ring), "--json")
    doc = json.loads(as_json.stdout)
    assert doc["name"] == "alice"
    assert doc["address"] == address
    assert len(bytes.fromhex(doc["public_key"])) == 32

    run(runner, "new", "bob", "--keyring", str(ring))
    listed = run(runner, "list", "--keyring", str(ring))
    assert listed.exit_code == 0
    lines = listed.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["alice", "bob"]
    assert lines[0].split()[1] == address

    listed_json = json.loads(run(runner, "list", "--keyring", str(ring), "--json").stdout)
    assert [d["name"] for d in listed_json] == ["alice", "bob"]

    # The key opens with the passphrase it was made with.
    key = Keyring(ring).load("alice", PASS)
    assert key.public_key.hex() == doc["public_key"]
    assert stat.S_IMODE((ring / "alice.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(ring.stat().st_mode) == 0o700


def test_new_prompts_with_confirmation_when_env_unset(runner, tmp_path):
    ring = tmp_path / "ring"
    result = run(
        runner, "new", "alice", "--keyring", str(ring), passphrase=None, input="s3cret\ns3cret\n"
    )
    assert result.exit_code == 0, result.output
    # Prompts go to stderr: stdout is only the address, for scripts.
    parse_address(result.stdout.strip())
    assert "s3cret" not in result.output
    assert Keyring(ring).load("alice", "s3cret")


def test_new_prompt_mismatch_asks_again(runner, tmp_path):
    ring = tmp_path / "ring"
    result = run(
        runner,
        "new",
        "alice",
        "--keyring",
        str(ring),
        passphrase=None,
        input="one\ntwo\nthree\nthree\n",
    )
    assert result.exit_code == 0, result.output
    with pytest.raises(WrongPassphrase):
        Keyring(ring).load("alice", "one")
    assert Keyring(ring).load("alice", "three")


def test_empty_env_passphrase_is_used(runner, tmp_path):
    ring = tmp_path / "ring"
    assert run(runner, "new", "a", "--keyring", str(ring), passphrase="").exit_code == 0
    assert Keyring(ring).load("a", "")


def test_duplicate_name(runner, tmp_path):
    ring = tmp_path / "ring"
    first = run(runner, "new", "alice", "--keyring", str(ring))
    before = (ring / "alice.json").read_bytes()
    again = run(runner, "new", "alice", "--keyring", str(ring))
    assert again.exit_code == 1
    assert "already exists" in again.output
    assert (ring / "alice.json").read_bytes() == before
    assert run(runner, "show", "alice", "--keyring", str(ring)).stdout == first.stdout


@pytest.mark.parametrize("name", ["../evil", "a/b", "a b", "x" * 65, "é", ""])
def test_bad_name(runner, tmp_path, name):
    ring = tmp_path / "ring"
    result = run(runner, "new", name, "--keyring", str(ring))
    assert result.exit_code == 1
    assert "invalid key name" in result.output
    assert not (tmp_path / "evil.json").exists()
    assert not ring.exists() or list(ring.iterdir()) == []


def test_missing_keyring(runner, tmp_path):
    missing = tmp_path / "nowhere"
    for args in (["show", "alice"], ["list"]):
        result = run(runner, *args, "--keyring", str(missing))
        assert result.exit_code == 1
        assert "does not exist" in result.output
        assert "Traceback" not in result.output


def test_missing_key(runner, tmp_path):
    ring = tmp_path / "ring"
    run(runner, "new", "alice", "--keyring", str(ring))
    result = run(runner, "show", "bob", "--keyring", str(ring))
    assert result.exit_code == 1
    assert "no key named 'bob'" in result.output


def test_keyring_option_required(runner):
    result = run(runner, "list")
    assert result.exit_code == 2
    assert "--keyring" in result.output


def test_keyring_from_env(runner, tmp_path):
    ring = tmp_path / "ring"
    env = {PASSPHRASE_ENV: PASS, "LIVELEDGER_KEYRING": str(ring)}
    assert runner.invoke(keys, ["new", "alice"], env=env).exit_code == 0
    assert runner.invoke(keys, ["list"], env=env).stdout.startswith("alice")


def test_list_empty_keyring(runner, tmp_path):
    ring = tmp_path / "ring"
    ring.mkdir()
    result = run(runner, "list", "--keyring", str(ring))
    assert result.exit_code == 0
    assert result.stdout == ""


def test_list_reports_broken_file_and_fails(runner, tmp_path):
    ring = tmp_path / "ring"
    run(runner, "new", "alice", "--keyring", str(ring))
    (ring / "broken.json").write_text("{}")
    result = run(runner, "list", "--keyring", str(ring))
    assert result.exit_code == 1
    assert result.stdout.startswith("alice")
    assert "broken" in result.stderr


# --- Keyring directly ---


def test_keyring_api(tmp_path):
    ring = Keyring(tmp_path / "ring")
    key = ring.create("alice", PASS)
    assert ring.names() == ["alice"]
    assert "alice" in ring and "bob" not in ring
    assert parse_address(ring.address("alice")) == key.address
    assert ring.load("alice", PASS).seed == key.seed
    with pytest.raises(KeyExists, match="'alice' already exists"):
        ring.create("alice", PASS)
    with pytest.raises(KeyNotFound):
        ring.load("bob", PASS)
    with pytest.raises(InvalidKeyName):
        ring.address("../alice")
    with pytest.raises(WrongPassphrase):
        ring.load("alice", "nope")
    assert repr(ring) == f"Keyring({str(tmp_path / 'ring')!r})"


def test_a_new_keyring_is_durable_in_its_parent(tmp_path, monkeypatch):
    # The key file is fsynced in the keyring, but a power loss could drop the new
    # keyring's own name, and the key with it.
    synced = fsynced_dirs(monkeypatch)
    Keyring(tmp_path / "ring").create("alice", PASS)
    assert dir_id(tmp_path) in synced and dir_id(tmp_path / "ring") in synced
    assert stat.S_IMODE((tmp_path / "ring").stat().st_mode) == 0o700


def test_names_ignore_foreign_and_temporary_files(tmp_path):
    ring = Keyring(tmp_path)
    ring.create("k1", "")
    (tmp_path / ".k2.json.abc.tmp").write_text("partial")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "bad name.json").write_text("{}")
    assert ring.names() == ["k1"]


def test_names_of_missing_keyring(tmp_path):
    with pytest.raises(KeystoreError, match="does not exist"):
        Keyring(tmp_path / "missing").names()


def test_passphrase_from_env(monkeypatch):
    monkeypatch.setenv(PASSPHRASE_ENV, "")
    assert passphrase_from_env_or_prompt(confirm=True) == ""
    monkeypatch.setenv(PASSPHRASE_ENV, "x y")
    assert passphrase_from_env_or_prompt(confirm=False) == "x y"
