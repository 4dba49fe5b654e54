"""The same moderation command sent for one user from several threads at once (a double submit).

Real path, as the audit ran it: `agents.plugin.build_router` (model-free "bow" parser) over a real SQLite
`guardrails.store.SettingsStore`, so `PersonalizationModeration` writes through `personalization`'s
`ProfileService`. Each caller must get what the sequential run gives: one "blocked new category crypto-spam" and
"re-blocked category crypto-spam" for the others, never "not applied: category 'crypto-spam' already exists"
(which made the finding read "moderation block: 0 of 1 applied" although the category was blocked). The
new-vs-existing decision used to be taken on a read made before the write transaction; it is now taken inside it.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from agents.plugin import _summary, build_router
from agents.router import RouteResult

THREADS = 4
ROUNDS = 6
BLOCK = "Stop showing me crypto spam"


@pytest.fixture()
def sqlite_store(tmp_path):
    from guardrails.store import SettingsStore

    s = SettingsStore(f"sqlite:///{tmp_path / 'router_concurrency.db'}")
    yield s
    s.close()


def _at_once(router, text: str, user_id: str, n: int = THREADS) -> list[RouteResult]:
    """Route `text` for `user_id` from `n` threads released together by a barrier; every result (or error)."""
    barrier = threading.Barrier(n, timeout=30)
    results: list[RouteResult] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            barrier.wait()
            res = router.route(text, user_id=user_id)
            with lock:
                results.append(res)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(results) == n
    return results


def _categories(store, user_id: str):
    from personalization.service import ProfileService

    return ProfileService(store).get(user_id).categories


def test_sequential_block_baseline(sqlite_store):
    router = build_router(sqlite_store, backend="bow")
    got = [router.route(BLOCK, user_id="seq").moderation[0].result for _ in range(THREADS)]
    assert got == ["blocked new category crypto-spam"] + ["re-blocked category crypto-spam"] * (THREADS - 1)


def test_concurrent_same_block_command_all_applied(sqlite_store):
    router = build_router(sqlite_store, backend="bow")
    for rnd in range(ROUNDS):
        user = f"bob{rnd}"
        results = _at_once(router, BLOCK, user)
        texts = Counter(r.moderation[0].result for r in results)
        assert texts == Counter({"blocked new category crypto-spam": 1,
                                 "re-blocked category crypto-spam": THREADS - 1}), (rnd, texts)
        for r in results:
            assert r.applied and r.error is None, (rnd, r.explanation)
            assert _summary(r) == "moderation block: 1 of 1 applied", (rnd, _summary(r))
        cats = _categories(sqlite_store, user)
        assert cats["crypto-spam"].action == "block"
        assert cats["crypto-spam"].examples == ["crypto spam"]
        # one audited write created the category; the re-blocks of a blocked category were no-op writes
        assert sqlite_store.get("default", user).version == 1
        assert [a.actor for a in sqlite_store.history("default", user)] == ["chat:moderation.block"]


def test_concurrent_block_after_unblock_reblocks(sqlite_store):
    router = build_router(sqlite_store, backend="bow")
    router.route(BLOCK, user_id="carol")
    router.route("unblock crypto spam", user_id="carol")
    assert _categories(sqlite_store, "carol")["crypto-spam"].action == "allow"
    results = _at_once(router, BLOCK, "carol")
    assert {r.moderation[0].result for r in results} == {"re-blocked category crypto-spam"}
    assert _categories(sqlite_store, "carol")["crypto-spam"].action == "block"


def test_concurrent_unblock_of_base_category_all_applied(sqlite_store):
    router = build_router(sqlite_store, backend="bow")
    for rnd in range(ROUNDS):
        user = f"dave{rnd}"
        results = _at_once(router, "unblock spam", user)
        assert [r.moderation[0].result for r in results] == ["unblocked category spam"] * THREADS, rnd
        assert all(r.applied and r.error is None for r in results)
        assert {_summary(r) for r in results} == {"moderation unblock: 1 of 1 applied"}
        assert _categories(sqlite_store, user)["spam"].action == "allow"
        assert sqlite_store.get("default", user).version == 1  # later unblocks of an unblocked category: no-op


def test_concurrent_block_and_unblock_of_user_category(sqlite_store):
    """After a concurrent block round, a concurrent unblock round reports the user category for every caller."""
    router = build_router(sqlite_store, backend="bow")
    for rnd in range(ROUNDS):
        user = f"erin{rnd}"
        _at_once(router, BLOCK, user)
        results = _at_once(router, "unblock crypto spam", user)
        assert [r.moderation[0].result for r in results] == ["unblocked category crypto-spam"] * THREADS, rnd
        cats = _categories(sqlite_store, user)
        assert cats["crypto-spam"].action == "allow"
        assert cats["spam"] == _categories(sqlite_store, "nobody")["spam"]  # the base category was not touched


def test_nothing_to_unblock_writes_nothing(sqlite_store):
    from agents.router import PersonalizationModeration

    mod = PersonalizationModeration(sqlite_store)
    # "crypto" and "toxic" words point at two base categories: ambiguous, refused without a write
    assert mod.unblock("default", "frank", "crypto insults", actor="r") == "nothing to unblock for crypto-insults"
    assert sqlite_store.get("default", "frank").version == 0
    assert sqlite_store.history("default", "frank") == []


@pytest.mark.parametrize("target", ["posts about the trolley problem", "posts about jurisprudence", "downloads",
                                    "dinosaur heads", "cryptography lectures"])
def test_unblock_reads_base_category_words_as_whole_words(sqlite_store, target):
    """'trolley' is not 'troll', 'jurisprudence' not 'rude', 'downloads' and 'heads' not 'ads', 'cryptography' not
    'crypto': unblocking such a topic changes nothing (it had unblocked the toxic or spam category)."""
    from agents.router import PersonalizationModeration

    mod = PersonalizationModeration(sqlite_store)
    assert mod.unblock("default", "gina", target, actor="r").startswith("nothing to unblock")
    assert sqlite_store.get("default", "gina").version == 0


@pytest.mark.parametrize("target,base", [("rudeness", "toxic"), ("trolls", "toxic"), ("advertisements", "spam"),
                                         ("scammers", "spam"), ("promotions", "spam"), ("negativity", "negative")])
def test_unblock_still_reads_inflected_base_category_words(sqlite_store, target, base):
    from agents.router import PersonalizationModeration

    mod = PersonalizationModeration(sqlite_store)
    assert mod.unblock("default", "hank", target, actor="r") == f"unblocked category {base}"


def test_two_long_topics_that_share_their_first_words_stay_two_categories(sqlite_store):
    """Names are cut to 48 characters; the cut keeps a hash of the whole topic, so the Boston topic is not a
    re-block of the Chicago one, and unblocking one leaves the other blocked."""
    from agents.router import PersonalizationModeration

    mod = PersonalizationModeration(sqlite_store)
    chicago = "posts about the championship game results from last night in chicago"
    boston = chicago.replace("chicago", "boston")
    a, b = (mod.block("default", "ivy", t, actor="r") for t in (chicago, boston))
    assert a.startswith("blocked new category") and b.startswith("blocked new category") and a != b
    assert mod.unblock("default", "ivy", chicago, actor="r") == "unblocked category " + a.rsplit(" ", 1)[1]
    cats = _categories(sqlite_store, "ivy")
    assert cats[b.rsplit(" ", 1)[1]].action == "block" and all(len(n) <= 48 for n in cats)
