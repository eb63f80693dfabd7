"""``liveledger review``: reviews of settled orders and merchants' replies."""

from __future__ import annotations

import click

from apps.commerce import payloads as tx
from cli.commerce.commands import ID, TxOpts, tx_command
from cli.main import main


@main.group()
def review() -> None:
    """Reviews of settled orders."""


@tx_command(review, "add")
@click.argument("order_id", type=ID)
@click.option("--rating", type=click.IntRange(1, 5), required=True)
@click.option("--text", default="")
def review_add(t: TxOpts, order_id: int, rating: int, text: str) -> None:
    """Review a settled order, or edit the review until the merchant replies (buyer)."""
    t.send(tx.REVIEW, tx.WriteReview(order_id, rating, text))


@tx_command(review, "reply")
@click.argument("order_id", type=ID)
@click.option("--text", required=True)
def review_reply(t: TxOpts, order_id: int, text: str) -> None:
    """Reply once to a review (merchant); the review is then final."""
    t.send(tx.REPLY_REVIEW, tx.ReplyReview(order_id, text))
