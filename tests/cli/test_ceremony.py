"""``liveledger genesis assemble`` refuses malformed options as usage errors, not failures."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from cli.main import main
from core import PrivateKey, format_address
from genesis import make_contribution, save_contribution

CHAIN = "cli-ceremony-1"


@pytest.fixture
def contribution(tmp_path):
    path = tmp_path / "c.json"
    save_contribution(
        path, make_contribution(PrivateKey.generate(), CHAIN, "m", "10.0.0.1:26656", 1_000)
    )
    return path


@pytest.mark.parametrize(
    "option, value, says",
    [
        ("--param", "min_fee=\u00b2", "NAME=VALUE"),
        ("--param", "min_fee", "NAME=VALUE"),
        ("--account", f"{format_address(bytes(20))}=\u00b2", "ADDRESS=BALANCE"),
        ("--account", "ll1nothing=5", "--account"),
    ],
)
def test_assemble_refuses_malformed_options(contribution, tmp_path, option, value, says):
    out = tmp_path / "genesis.json"
    args = ["genesis", "assemble", str(contribution), "--chain-id", CHAIN, "-o", str(out)]
    result = CliRunner().invoke(main, [*args, option, value])
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert "unexpected" not in result.output
    assert not out.exists()
    # The same command with good values writes the document.
    ok = CliRunner().invoke(main, [*args, "--param", "min_fee=7"])
    assert ok.exit_code == 0, ok.output
    assert out.exists()


def test_an_output_that_cannot_be_written_is_a_clear_error(contribution, tmp_path, monkeypatch):
    # A typo in -o: a one-line error naming the path, not an "unexpected failure".
    home = tmp_path / "home"
    monkeypatch.setenv("LIVELEDGER_PASSPHRASE", "")
    assert CliRunner().invoke(main, ["init", "--home", str(home), "--moniker", "m",
                                     "--p2p-listen", "127.0.0.1:26656"]).exit_code == 0  # fmt: skip
    missing = tmp_path / "no-such-dir"
    for args in (
        ["genesis", "assemble", str(contribution), "--chain-id", CHAIN],
        ["genesis", "contribute", "--home", str(home), "--chain-id", CHAIN, "--stake", "5"],
    ):
        result = CliRunner().invoke(main, [*args, "-o", str(missing / "out.json")])
        assert result.exit_code != 0
        assert f"cannot write {missing / 'out.json'}: No such file or directory" in result.output
        assert "unexpected" not in result.output


def test_assemble_refuses_a_parameter_given_twice(contribution, tmp_path):
    # Two values for one parameter: the coordinator's typo, not a choice to guess.
    out = tmp_path / "genesis.json"
    args = ["genesis", "assemble", str(contribution), "--chain-id", CHAIN, "-o", str(out)]
    result = CliRunner().invoke(main, [*args, "--param", "min_fee=7", "--param", "min_fee=8"])
    assert result.exit_code == 2, result.output
    assert "min_fee is given twice" in result.output
    assert not out.exists()


def test_a_file_argument_that_is_a_fifo_is_refused_not_waited_on(contribution, tmp_path):
    # Nobody writes to this FIFO: a command that opened it would wait for ever.
    fifo = tmp_path / "genesis.fifo"
    os.mkfifo(fifo)
    out = tmp_path / "genesis.json"
    for args in (
        ["genesis", "hash", str(fifo)],
        ["genesis", "assemble", str(contribution), str(fifo), "--chain-id", CHAIN, "-o", str(out)],
        ["genesis", "install", "--home", str(tmp_path), str(fifo), "--expect-hash", "00" * 32],
    ):
        result = CliRunner().invoke(main, args)
        assert result.exit_code != 0
        assert f"{fifo} is not a regular file but a FIFO" in result.output, result.output
        assert "unexpected" not in result.output
    assert not out.exists()


def test_install_with_the_contribution_refuses_a_genesis_that_left_it_out(tmp_path, monkeypatch):
    # The member's own contribution against the document: left out is refused, not a note.
    monkeypatch.setenv("LIVELEDGER_PASSPHRASE", "")
    run = CliRunner().invoke
    home, mine, genesis = tmp_path / "home", tmp_path / "mine.json", tmp_path / "genesis.json"
    init = ["init", "--home", str(home), "--moniker", "me", "--external", "me.example:26656"]
    assert run(main, init).exit_code == 0
    contribute = ["genesis", "contribute", "--home", str(home), "--chain-id", CHAIN]
    assert run(main, [*contribute, "--stake", "5000", "-o", str(mine)]).exit_code == 0
    other = tmp_path / "other.json"
    save_contribution(
        other, make_contribution(PrivateKey.generate(), CHAIN, "x", "10.0.0.1:26656", 5_000)
    )
    assemble = ["genesis", "assemble", "--chain-id", CHAIN, "-o", str(genesis)]
    made = run(main, [*assemble, str(other)])
    assert made.exit_code == 0, made.output
    install = ["genesis", "install", "--home", str(home), str(genesis)]
    install += ["--expect-hash", made.stdout.split()[-1]]
    result = run(main, [*install, "--contribution", str(mine)])
    assert result.exit_code != 0
    assert "does not list this node's contribution 'me'" in result.output, result.output
    assert "unexpected" not in result.output
    assert not (home / "genesis.json").exists()
    # Without it, only a note says so (a member admitted later looks the same).
    result = run(main, install)
    assert result.exit_code == 0, result.output
    assert "--contribution" in result.stderr
