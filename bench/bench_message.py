"""Micro-benchmark: personalised messages per second from MessageFactory.build.

    .venv/bin/python bench/bench_message.py [--size-kb 50] [--seconds 3] [--dkim]

Renders one digest of about `--size-kb` of HTML, then builds messages for distinct
recipients on one core and prints messages/s. Target: >= 5,000/s without DKIM.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date
from pathlib import Path

from newsletter.composer import IssueContent, ItemContent, compose
from newsletter.message import MessageFactory, Recipient
from newsletter.render import render_digest
from newsletter.settings import settings

PARAGRAPH = (
    "Hermès International's third quarter sales jumped 24% to €3.14 billion at constant "
    "exchange rates, boosted by its strong performance across Greater China, while "
    "Cainiao finished two smart distribution centres in Karachi and Lahore. "
)


def make_issue(size_kb: int) -> IssueContent:
    items = []
    for i in range(1, 13):
        body = "\n\n".join(PARAGRAPH * 2 for _ in range(max(1, size_kb // 24)))
        items.append(
            ItemContent(
                id=i,
                position=i,
                headline=f"Story {i}: Daraz and Cainiao build Pakistan's first smart warehouses",
                body=body,
                link_text="Read the full story",
                link_url=f"https://www.alizila.com/story-{i}/?utm_source=roundup",
                topics=("logistics",) if i % 2 else ("luxury-fashion",),
            )
        )
    return IssueContent(
        id=1,
        title="Alibaba News Roundup: Hermès beats expectations",
        intro="This week: luxury, logistics and more.",
        issue_date=date(2020, 10, 23),
        items=tuple(items),
        topic_names={"logistics": "Logistics", "luxury-fashion": "Luxury & Fashion"},
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-kb", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--dkim", action="store_true", help="sign with a fresh 2048-bit key")
    args = parser.parse_args()

    if args.dkim:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        path = Path(tempfile.mkdtemp()) / "dkim.pem"
        path.write_bytes(pem)
        settings.dkim_private_key_path = path
        settings.dkim_domain = "roundup.example"

    issue = make_issue(args.size_kb)
    composition = compose(issue, followed=["logistics"], max_items=12)
    assert composition is not None
    digest = render_digest(issue, composition)
    factory = MessageFactory(digest=digest, issue_id=issue.id)
    sample = factory.build(Recipient(1, "reader1@example.com", "Reader One"))
    html_kb, message_kb = len(digest.html_template) / 1024, len(sample.data) / 1024
    print(f"html {html_kb:.1f} KB, message {message_kb:.1f} KB")

    n = 0
    start = time.perf_counter()
    deadline = start + args.seconds
    while time.perf_counter() < deadline:
        for _ in range(200):
            n += 1
            factory.build(Recipient(n, f"reader{n}@example.com", f"Reader {n}"))
    elapsed = time.perf_counter() - start
    print(f"{n / elapsed:,.0f} messages/s ({elapsed / n * 1e6:.0f} µs each)")


if __name__ == "__main__":
    main()
