"""Every type-ignore comment in the project names its codes and says why (issue 11)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["core", "storage", "vm", "consensus", "p2p", "apps", "genesis", "node", "cli"]
IGNORE = re.compile(r"#\s*type:\s*ignore(?P<codes>\[[^\]]*\])?(?P<rest>.*)$")


def test_every_type_ignore_names_its_codes_and_a_reason():
    bare = []
    for top in [*PACKAGES, "benches", "tests"]:
        for path in sorted((ROOT / top).rglob("*.py")):
            for no, line in enumerate(path.read_text().splitlines(), 1):
                m = IGNORE.search(line)
                if m is None:
                    continue
                if not m.group("codes") or not re.match(r"\s+#\s*\S", m.group("rest")):
                    bare.append(f"{path.relative_to(ROOT)}:{no}: {line.strip()}")
    assert bare == []
