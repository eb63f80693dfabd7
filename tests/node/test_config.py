"""Node-local settings: what config.json may hold (``node/config.py``)."""

from __future__ import annotations

import json

import pytest

from genesis.localnet import write_node_config
from node.config import ConfigError, load_config


@pytest.mark.parametrize("key", ["unsafe_double_sign", "unsafe_equivocate", "behaviour"])
def test_no_setting_makes_a_node_misbehave(tmp_path, key):
    # Byzantine behaviours for tests live behind a test-only entry point
    # (tests/e2e/byzantine.py); a production config cannot ask for one.
    path = write_node_config(tmp_path, moniker="n", http_port=1, p2p_port=2)
    assert load_config(tmp_path).moniker == "n"
    doc = json.loads(path.read_text())
    doc[key] = True
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=f"unknown settings \\['{key}'\\]"):
        load_config(tmp_path)
