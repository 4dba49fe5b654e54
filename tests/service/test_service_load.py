"""A small, bounded run of the load test against the in-thread server: zero errors under concurrency
(checks and conflicting settings writes from many clients at once). The full-size run is
`python -m guardrails.service.loadtest --clients 100 --duration 60` (see guardrails/service/SERVICE.md)."""

from __future__ import annotations

from guardrails.service.loadtest import run_load


async def test_bounded_load_no_errors(service):
    _, key = service.new_tenant()
    result = await run_load(service.url, key, clients=12, duration_s=3.0, max_requests=600, write_share=0.3)
    assert result["errors"] == 0, result["errors_by_kind"]
    assert result["check_n"] > 20 and result["write_n"] > 5
    assert result["check_p99_ms"] is not None
    with service.client(key) as c:  # every client's key made it in: no lost update under contention
        seen = set()
        for u in range(12):
            try:
                seen |= set(c.get_section(f"user{u}", "guard").get("thresholds", {}))
            except Exception:
                pass
        assert seen  # writes landed; per-key completeness is asserted in the multi-worker test
