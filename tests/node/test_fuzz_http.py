"""A bounded fuzz campaign over every HTTP route, driven from the OpenAPI document
(``benches.fuzz_http``; ``make fuzz`` runs the long one): no input may crash the
node (5xx, dropped connection) or get an answer the document does not describe."""

from __future__ import annotations

import time

from benches.fuzz_http import campaign, devnet_node, print_report

# Inputs per operation: ~25 operations, well under a minute on a loaded machine.
EXAMPLES = 40


def test_every_route_survives_fuzzing_from_the_openapi_document():
    started = time.monotonic()
    with devnet_node() as base:
        report = campaign(base, EXAMPLES, seed=0)
    print_report(report, base, time.monotonic() - started)
    assert report.inputs >= 20 * EXAMPLES
    assert report.failures == []
