"""Sending an issue exactly once: planning, the ledger, claiming, SMTP batches, the sweep.

The `delivery` table is the source of truth, never the broker. Every state change is a
conditional UPDATE whose row count says whether we won:

    plan_send      issue approved/scheduled -> sending; one `pending` row per subscriber,
                   written by one INSERT ... SELECT
    run_batch      pending -> sending (claim_token + lease) -> sent | failed | suppressed
                   | skipped, or back to pending with a backoff (4xx, dropped connection),
                   or handed back (pending/cancelled) when the issue is paused/cancelled
    sweep          sending rows whose lease expired -> pending, and their batch re-enqueued;
                   rows out of attempts (SEND_MAX_RETRIES + 1) -> failed; batches lost
                   with Redis re-enqueued
    retry_failed   failed -> pending (attempts reset), each row once, re-enqueued

A row is marked `sent` right after the server's 250, in a group commit a few
milliseconds later, so a worker killed at any point costs at most the messages in
flight a duplicate. A row is charged an attempt only when its own transaction failed.

One module per concern:

    ledger.py    table handles, counts (and rows waiting for a retry), claim, the
                 per-row writes of a claimed batch
    enqueue.py   publishing batch tasks after commit
    planning.py  plan_send, start_send
    batch.py     run_batch: claim, re-check each reader, compose, say when to run again
    sending.py   a batch's sends: many connections at once on the worker's event loop,
                 messages built ahead on a thread, each row's verdict
    pool.py      the worker process's event loop and its idle relay connections
    connection.py  one asyncio SMTP session (aiosmtplib set-up, pipelined transactions)
    replies.py   what a reply means, by RFC 3463 enhanced status code first
    ratelimit.py SMTP_RATE_LIMIT shared by all workers through Redis (`limits`)
    writer.py    the batch's database thread: group-committed marks, status, leases
    smtp.py      synchronous one-off sends (test sends, sign-up mail)
    control.py   pause, resume, cancel (and waiting for batches to hand rows back),
                 retrying failed rows, the sweep (and rows out of attempts)
    timeline.py  when an issue's messages were accepted, bucketed for the report
"""

from newsletter.delivery.batch import run_batch
from newsletter.delivery.control import (
    cancel_send,
    in_flight,
    pause_send,
    resume_send,
    retry_failed,
    sweep_expired_leases,
    wait_for_hand_back,
)
from newsletter.delivery.enqueue import enqueue_after_commit, enqueue_batches, publish_batches
from newsletter.delivery.ledger import (
    ERROR_LIMIT,
    OPEN,
    AlreadyPlanned,
    ClaimedRow,
    SendError,
    Waiting,
    claim,
    finish_if_done,
    load_claimed,
    pending_batches,
    status_counts,
    waiting_rows,
)
from newsletter.delivery.planning import PLANNABLE, CompositionCache, plan_send, start_send
from newsletter.delivery.replies import Verdict, classify
from newsletter.delivery.sending import MAX_RETRY_DELAY, BatchOutcome, backoff_seconds
from newsletter.delivery.smtp import send_one, smtp_connect

__all__ = [
    "ERROR_LIMIT", "MAX_RETRY_DELAY", "OPEN", "PLANNABLE",
    "AlreadyPlanned", "BatchOutcome", "ClaimedRow", "CompositionCache",
    "SendError", "Verdict", "Waiting",
    "backoff_seconds", "cancel_send", "claim", "classify", "enqueue_after_commit",
    "enqueue_batches", "finish_if_done", "in_flight", "load_claimed",
    "pause_send", "pending_batches", "plan_send", "publish_batches", "resume_send",
    "retry_failed", "run_batch", "send_one", "smtp_connect", "start_send", "status_counts",
    "sweep_expired_leases", "wait_for_hand_back", "waiting_rows",
]
