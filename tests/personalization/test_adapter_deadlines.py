"""The OpenAI-compatible adapter's deadline and its per-event-loop async client, against a raw HTTP stub on 127.0.0.1
that answers at once (keep-alive), drips its answer one byte per 0.2 s (status line and headers, or body: no single
read ever times out), or says nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from guardrails.errors import DetectorError
from personalization.adapters import OpenAICompatAdapter
from tests.raw_http import DripServer, bounded, wait_until

REPLY = json.dumps({"choices": [{"message": {"role": "assistant", "content": '{"label": "spam"}'}}]}).encode()
MSGS, LABELS = [{"role": "user", "content": "win a prize"}], ["benign", "spam"]


@pytest.fixture(scope="module")
def server():
    stub = DripServer(REPLY, suffix="/v1")
    yield stub
    stub.close()


@pytest.fixture()
def stub(server: DripServer) -> DripServer:
    server.mode = "json"
    return server


def both_twins(ad: OpenAICompatAdapter) -> list[Callable[[], Any]]:
    return [lambda: ad.label_probs(MSGS, LABELS), lambda: asyncio.run(ad.alabel_probs(MSGS, LABELS))]


@pytest.mark.parametrize("mode", ["trickle_headers", "trickle_body"])
def test_deadline_bounds_a_trickled_reply_in_both_twins(stub: DripServer, mode: str):
    """timeout=1 bounds each read; the deadline (2 s) bounds the call even while the status line and headers
    trickle in (the deadline used to be checked only when a body chunk arrived). Same error, same text, in both
    twins, and the cut-short connection is closed."""
    stub.mode = mode
    ad = OpenAICompatAdapter(stub.url, "m", timeout=1.0, max_retries=2, backoff=0.1, deadline=2.0)
    errors = []
    for call in both_twins(ad):
        ended = len(stub.ended)
        err, took = bounded(call)
        assert isinstance(err, DetectorError), err
        assert 1.5 < took < 8, took
        assert wait_until(lambda n=ended: len(stub.ended) > n), "the trickled connection was left open"
        errors.append(str(err))
    assert errors[0] == errors[1] == f"{stub.url}: no answer within the 2 s deadline"


def test_read_timeouts_read_the_same_in_both_twins(stub: DripServer):
    """httpx's sync read timeout says "timed out", the async one nothing: the adapter's error said either."""
    stub.mode = "silent"
    ad = OpenAICompatAdapter(stub.url, "m", timeout=0.3, max_retries=1, backoff=0.01, deadline=10)
    errors = [str(bounded(call)[0]) for call in both_twins(ad)]
    assert errors[0] == errors[1] == f"{stub.url}: failed after 2 attempts: ReadTimeout"
    ad = OpenAICompatAdapter(stub.url, "m", timeout=0.3, max_retries=3, backoff=0.3, deadline=1)
    errors = [str(bounded(call)[0]) for call in both_twins(ad)]  # no room left for the next backoff
    # it said "no answer within the 1 s deadline" before the deadline had passed (review of session 33)
    assert errors[0] == errors[1] == (f"{stub.url}: failed after 2 attempt(s), and the next backoff (0.6 s) would "
                                      "pass the 1 s deadline: ReadTimeout")


def test_async_client_is_pooled_per_event_loop_and_closed_with_it(stub: DripServer):
    """alabel_probs built (TLS context and all) and tore down an AsyncClient per call, on the event loop; now each
    loop has one, reused by its calls (one connection) and closed when that loop shuts down. An adapter used from
    several `asyncio.run` calls in turn works in each."""
    ad = OpenAICompatAdapter(stub.url, "m")

    async def calls() -> list[dict[str, float]]:
        return [await ad.alabel_probs(MSGS, LABELS) for _ in range(2)] + list(
            await asyncio.gather(*(ad.alabel_probs(MSGS, LABELS) for _ in range(2))))

    for _ in range(2):
        accepted, ended = stub.accepted, len(stub.ended)
        assert asyncio.run(calls()) == [{"benign": 0.0, "spam": 1.0}] * 4
        assert stub.accepted - accepted <= 2  # the sequential calls shared one connection (old code: 4)
        assert wait_until(lambda a=accepted, n=ended: len(stub.ended) - n >= stub.accepted - a)


def test_adapter_aclose_and_close(stub: DripServer):
    ad = OpenAICompatAdapter(stub.url, "m")

    async def closing(close: Callable[[], Any]) -> None:
        await ad.alabel_probs(MSGS, LABELS)
        ended = len(stub.ended)
        await close()
        for _ in range(200):  # the connection ends while the loop still runs, not at its shutdown
            if len(stub.ended) > ended:
                break
            await asyncio.sleep(0.01)
        assert len(stub.ended) > ended
        assert await ad.alabel_probs(MSGS, LABELS) == {"benign": 0.0, "spam": 1.0}  # a later call: a new client

    async def close_sync() -> None:
        ad.close()  # sync, from code running on the loop: scheduled on it

    asyncio.run(closing(ad.aclose))
    asyncio.run(closing(close_sync))
