"""A genesis document from anywhere, damaged any way: ``InvalidGenesis`` or a genesis.

The CLI reads a genesis a node serves (``genesis pin --from-node``), operators pass
them around by hand, and a node refuses to start on a bad one. Whatever the document,
parsing ends in ``InvalidGenesis`` naming a field, or in a genesis that survives the
strict codec and writes back as the document it was read from: never another
exception (a traceback where a message belongs).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genesis import Genesis, InvalidGenesis, create_localnet, load_genesis
from genesis.document import parse_json

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0, 1, 2**64 - 1, 2**64, -1])
    | st.text(max_size=80)
    | st.sampled_from(["", "00" * 20, "00" * 32, "ll1" + "q" * 38, "zz"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def document(tmp_path_factory) -> Any:
    """The genesis of a four-validator localnet, staking and commerce included, as JSON."""
    root = tmp_path_factory.mktemp("fuzz-net")
    create_localnet(root, 4, "")
    doc = json.loads((root / "genesis.json").read_text())
    assert "commerce" in doc and "staking" in doc
    return doc


def _paths(doc: Any, at: tuple = ()) -> list[tuple]:
    out = [at]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*at, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += _paths(value, (*at, i))
    return out


def _parent(doc: Any, path: tuple) -> Any:
    for step in path[:-1]:
        doc = doc[step]
    return doc


def _parse(doc: Any) -> Genesis | None:
    try:
        return Genesis.from_json(parse_json(json.dumps(doc)))
    except InvalidGenesis as exc:
        assert exc.message
        return None


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_damaged_genesis_is_refused_by_name_or_read_whole(document, data):
    doc = json.loads(json.dumps(document))
    for _ in range(data.draw(st.integers(1, 3), label="damages")):
        paths = _paths(doc)[1:]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths), label="path")
        parent = _parent(doc, path)
        how = data.draw(st.sampled_from(["replace", "remove", "add", "repeat"]), label="how")
        if how == "replace":
            parent[path[-1]] = data.draw(json_values, label="value")
        elif how == "remove":
            del parent[path[-1]]
        elif how == "add" and isinstance(parent, dict):
            parent[data.draw(st.text(max_size=8), label="key")] = data.draw(json_values)
        elif how == "repeat" and isinstance(parent, list):
            parent.append(parent[path[-1]])
    genesis = _parse(doc)
    if genesis is not None:
        # Read whole: it survives the strict codec and writes back to what was read.
        assert Genesis.decode(genesis.encode()) == genesis
        assert _parse(genesis.to_json()) == genesis


def test_the_undamaged_document_is_read(document, tmp_path):
    genesis = _parse(document)
    assert genesis is not None and genesis.to_json() == document
    path = tmp_path / "genesis.json"
    path.write_text(json.dumps(document))
    assert load_genesis(path) == genesis
