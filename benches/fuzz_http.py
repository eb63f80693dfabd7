"""Fuzz every HTTP route of a live node from its OpenAPI document.

Starts a one-validator devnet node as a real process on loopback (or targets
``--url``), reads ``GET /v1/openapi.json`` and, for every operation, drives its
path, query and header parameters and its request bodies with Hypothesis: values
drawn from the documented schemas (``hypothesis-jsonschema``) mixed with hostile
ones (unicode digits, huge numbers, separators, binary, nested structures, wrong
content types). Every answer is checked against the document:

- never a 5xx, never a dropped connection (a crash);
- an error is JSON ``{"code", "message"}`` whose code is listed for that status
  (``x-codes``; a contract violation);
- a 2xx JSON answer validates against the documented schema (a contract violation).

Prints the inputs tried, per status, and every failure with a curl line that
replays it. ``python -m benches.fuzz_http --examples 2000`` is the long campaign
(``make fuzz``); ``tests/node/test_fuzz_http.py`` runs a bounded one in CI.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 15.0
# aiohttp's limit on the request line (and each header line).
MAX_LINE = 8190

# Values that broke or nearly broke parsers before: unicode digits int() refuses,
# numbers past u64, separators, traversal, control characters, huge lengths.
NASTY = [
    "",
    "0",
    "-1",
    "²",
    "١٢",
    "1e3",
    "latest",
    "9" * 25,
    str(2**64),
    str(2**63),
    "0x10",
    "1:2",
    "1:",
    ":1",
    "a/b",
    "../../",
    "%00",
    "\x00",
    "null",
    "true",
    "[]",
    "{}",
    "ll1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq6yvv9t",
    "00" * 32,
    "00" * 33,
    "2a" + "00" * 8,
    "zz",
    "0" * 5000,
]


@dataclass
class Failure:
    kind: str
    method: str
    url: str
    status: int | None
    detail: str
    headers: dict[str, str]
    body: bytes | None

    def curl(self, base: str) -> str:
        parts = ["curl", "-i", "-X", self.method]
        for name, value in self.headers.items():
            parts += ["-H", f"{name}: {value}"]
        if self.body is not None:
            parts += ["--data-binary", f"@<({len(self.body)} bytes)"]
        parts.append(base + self.url)
        return " ".join(shlex.quote(p) for p in parts)


@dataclass
class Report:
    inputs: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    per_operation: Counter[str] = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)

    @property
    def crashes(self) -> list[Failure]:
        return [f for f in self.failures if f.kind == "crash"]


# --- the document ---


def _inline(node: Any, doc: dict[str, Any], depth: int = 0) -> Any:
    """``node`` with every local ``$ref`` replaced by its target (the document has no cycles)."""
    if depth > 50:
        raise ValueError("reference cycle in the OpenAPI document")
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = doc
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            merged = {**_inline(target, doc, depth + 1)}
            merged.update({k: v for k, v in node.items() if k != "$ref"})
            return _inline(merged, doc, depth + 1)
        return {k: _inline(v, doc, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, doc, depth + 1) for v in node]
    return node


@dataclass
class Operation:
    method: str
    template: str
    op_id: str
    parameters: list[dict[str, Any]]
    body_types: dict[str, dict[str, Any]]
    responses: dict[str, dict[str, Any]]

    def codes(self, status: int) -> list[str]:
        response = self.responses.get(str(status), self.responses["default"])
        return list(response.get("x-codes", ()))

    def schema(self, status: int) -> dict[str, Any] | None:
        response = self.responses.get(str(status))
        if response is None:
            return None
        return response.get("content", {}).get("application/json", {}).get("schema")


def operations(doc: dict[str, Any]) -> list[Operation]:
    out = []
    for template, item in doc["paths"].items():
        for method, op in item.items():
            op = _inline(op, doc)
            body = op.get("requestBody", {}).get("content", {})
            out.append(
                Operation(
                    method.upper(),
                    template,
                    op["operationId"],
                    op.get("parameters", []),
                    {ctype: media.get("schema", {}) for ctype, media in body.items()},
                    op["responses"],
                )
            )
    return out


# --- inputs ---

_TEXT = st.text(max_size=60)
_ASCII = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_MSGPACK = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=6),
    max_leaves=20,
)


def _schema_value(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of ``schema``: objects, arrays and unions here, leaves by hypothesis-jsonschema.

    (hypothesis-jsonschema 0.23's object and array strategies use Hypothesis internals
    that newer Hypothesis releases removed; its leaf strategies are fine.)
    """
    clean = {k: v for k, v in schema.items() if k not in ("examples", "default", "description")}
    for union in ("oneOf", "anyOf"):
        if union in clean:
            return st.one_of([_schema_value(s) for s in clean[union]])
    if clean.get("type") == "object" and "properties" in clean:
        required = set(clean.get("required", ()))
        props = {name: _schema_value(sub) for name, sub in clean["properties"].items()}
        return st.fixed_dictionaries(
            {k: v for k, v in props.items() if k in required},
            optional={k: v for k, v in props.items() if k not in required},
        )
    if clean.get("type") == "array":
        low = clean.get("minItems", 0)
        return st.lists(
            _schema_value(clean.get("items", {})),
            min_size=low,
            max_size=min(clean.get("maxItems", low + 8), low + 8),
        )
    return from_schema(clean)


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


def _param_value(param: dict[str, Any]) -> st.SearchStrategy[str]:
    header = param["in"] == "header"
    hostile = st.sampled_from(NASTY) | (_ASCII if header else _TEXT)
    valid = _schema_value(param.get("schema", {})).map(_as_text)
    value = st.one_of(valid, valid, hostile)
    if header:
        # Printable ASCII: control characters make the request invalid HTTP, refused by
        # the parser (plain text) before any route sees it.
        value = value.filter(lambda v: all(" " <= c <= "~" for c in v))
    return value


def _body(op: Operation) -> st.SearchStrategy[tuple[str, bytes]]:
    choices = []
    for ctype, schema in op.body_types.items():
        if ctype == "application/json":
            choices.append(
                st.tuples(
                    st.just(ctype), _schema_value(schema).map(lambda v: json.dumps(v).encode())
                )
            )
            choices.append(st.tuples(st.just(ctype), _JSON.map(lambda v: json.dumps(v).encode())))
        else:
            choices.append(
                st.tuples(
                    st.just(ctype), _MSGPACK.map(lambda v: msgpack.packb(v, use_bin_type=True))
                )
            )
            choices.append(
                st.tuples(
                    st.just(ctype),
                    st.lists(st.binary(max_size=300), max_size=8).map(
                        lambda v: msgpack.packb(v, use_bin_type=True)
                    ),
                )
            )
    ctypes = st.sampled_from([*op.body_types, "text/plain", "application/x-www-form-urlencoded"])
    choices.append(st.tuples(ctypes, st.binary(max_size=400)))
    return st.one_of(choices)


@dataclass
class Request:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


@st.composite
def requests(draw: st.DrawFn, op: Operation) -> Request:
    path = op.template
    query: list[tuple[str, str]] = []
    headers: dict[str, str] = {}
    for param in op.parameters:
        where = param["in"]
        if where != "path" and not param.get("required") and draw(st.booleans()):
            continue
        if where == "header" and param["name"].lower() == "upgrade" and draw(st.booleans()):
            continue
        value = draw(_param_value(param))
        if where == "path":
            path = path.replace("{" + param["name"] + "}", urllib.parse.quote(value, safe=""))
        elif where == "query":
            query.append((param["name"], value))
        else:
            headers[param["name"]] = value
    if draw(st.integers(0, 9)) == 0:
        query.append((draw(_ASCII), draw(_TEXT)))
    url = path + ("?" + urllib.parse.urlencode(query) if query else "")
    body = None
    if op.body_types:
        ctype, body = draw(_body(op))
        headers["Content-Type"] = ctype
    return Request(op.method, url, headers, body)


# --- running ---


class Client:
    """One keep-alive connection, reopened after the server closes it."""

    def __init__(self, base: str) -> None:
        parsed = urllib.parse.urlsplit(base)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.conn: http.client.HTTPConnection | None = None

    def send(self, req: Request) -> tuple[int, dict[str, str], bytes]:
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT_S)
            try:
                self.conn.request(req.method, req.url, body=req.body, headers=req.headers)
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
            except (ConnectionError, http.client.RemoteDisconnected, BrokenPipeError):
                # A keep-alive connection the server closed between requests: once more.
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def check(
    op: Operation, req: Request, status: int, headers: dict[str, str], data: bytes
) -> Failure | None:
    def fail(kind: str, detail: str) -> Failure:
        return Failure(kind, req.method, req.url, status, detail, req.headers, req.body)

    if status >= 500:
        return fail("crash", data[:300].decode(errors="replace"))
    if "json" not in headers.get("content-type", ""):
        # aiohttp's parser refuses a request line over 8 KiB with a plain 400 before any
        # route runs (docs/node.md); anything else must be our JSON.
        if op.template == "/metrics" or (status == 400 and len(req.url) > MAX_LINE):
            return None
        return fail("contract", f"not JSON: {data[:120]!r}")
    try:
        doc = json.loads(data)
    except ValueError:
        return fail("contract", f"body is not JSON: {data[:200]!r}")
    if status >= 400:
        if not isinstance(doc, dict) or set(doc) != {"code", "message"}:
            return fail("contract", f"error is not {{code, message}}: {str(doc)[:200]}")
        if doc["code"] not in op.codes(status):
            return fail("contract", f"code {doc['code']!r} is not listed for {status}")
        return None
    schema = op.schema(status)
    if schema is not None:
        try:
            jsonschema.validate(doc, schema)
        except jsonschema.ValidationError as exc:
            return fail("contract", f"answer does not match its schema: {exc.message[:200]}")
    return None


def fuzz_operation(client: Client, op: Operation, examples: int, seed: int, report: Report) -> None:
    @hypothesis_seed(seed)
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    @given(requests(op))
    def run(req: Request) -> None:
        report.inputs += 1
        report.per_operation[op.op_id] += 1
        try:
            status, headers, data = client.send(req)
        except (OSError, http.client.HTTPException) as exc:
            report.failures.append(
                Failure("crash", req.method, req.url, None, repr(exc), req.headers, req.body)
            )
            client.close()
            return
        report.statuses[status] += 1
        failure = check(op, req, status, headers, data)
        if failure is not None:
            report.failures.append(failure)

    run()


def campaign(base: str, examples: int, seed: int) -> Report:
    """Fuzz every operation of the node at ``base`` with ``examples`` inputs each."""
    client = Client(base)
    req = Request("GET", "/v1/openapi.json", {}, None)
    status, _, data = client.send(req)
    assert status == 200, status
    doc = json.loads(data)
    report = Report()
    for i, op in enumerate(operations(doc)):
        fuzz_operation(client, op, examples, seed + i, report)
    client.close()
    return report


# --- a node to fuzz ---


@contextmanager
def devnet_node() -> Iterator[str]:
    """A one-validator node of this checkout as a process on loopback: its base URL."""
    from core import TxBody, sign_tx
    from core.keystore import load_key
    from genesis import create_localnet
    from vm import Transfer

    with tempfile.TemporaryDirectory(prefix="fuzz-http-") as tmp:
        layout = create_localnet(Path(tmp) / "net", 1, "")
        home = layout.nodes[0].home
        config = json.loads((home / "config.json").read_text())
        config["block_interval_ms"] = 200
        (home / "config.json").write_text(json.dumps(config))
        env = dict(os.environ, LIVELEDGER_PASSPHRASE="", PYTHONPATH=str(REPO))
        log = open(home / "node.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "node", "start", "--home", str(home)],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{config['http_port']}"
        try:
            client = Client(base)
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.send(Request("GET", "/v1/status", {}, None))[0] == 200:
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((home / "node.log").read_text()[-3000:])
                time.sleep(0.1)
            # Something to read: a committed transfer (blocks, a receipt, an account).
            faucet = load_key(layout.faucet_key_path, "")
            body = TxBody(0, 1000, 1000, "transfer", Transfer(b"\x01" * 20, 5).encode())
            raw = sign_tx(faucet, layout.genesis.chain_id, body).encode()
            client.send(
                Request(
                    "POST",
                    "/v1/txs",
                    {"Content-Type": "application/json"},
                    json.dumps({"tx": raw.hex()}).encode(),
                )
            )
            client.close()
            yield base
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
            if proc.returncode not in (0, -signal.SIGTERM):
                print(f"node exited with {proc.returncode}", file=sys.stderr)


def print_report(report: Report, base: str, seconds: float) -> None:
    print(f"inputs tried: {report.inputs:,} over {len(report.per_operation)} operations")
    print(
        "answers by status: " + ", ".join(f"{s}: {n:,}" for s, n in sorted(report.statuses.items()))
    )
    print(f"crashes (5xx or dropped connection): {len(report.crashes)}")
    print(f"contract violations: {len(report.failures) - len(report.crashes)}")
    print(f"time: {seconds:.1f} s ({report.inputs / max(seconds, 1e-9):,.0f} inputs/s)")
    for failure in report.failures[:50]:
        print(
            f"  {failure.kind}: {failure.method} {failure.url[:120]} -> {failure.status}: "
            f"{failure.detail[:200]}"
        )
        print(f"    {failure.curl(base)[:300]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000, help="inputs per operation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--url", help="fuzz this node instead of starting one")
    args = parser.parse_args()
    started = time.monotonic()
    if args.url:
        report = campaign(args.url, args.examples, args.seed)
        base = args.url
    else:
        with devnet_node() as base:
            report = campaign(base, args.examples, args.seed)
    print_report(report, base, time.monotonic() - started)
    print(f"reproduce: python -m benches.fuzz_http --examples {args.examples} --seed {args.seed}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
