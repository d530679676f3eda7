"""The cross-request batcher on its own, with a scoring function that records its batches (no model, no HTTP):
batches bounded by padded tokens, no wait for a lone request, the wait for arriving ones, one request per call
with batching off, the queue limit, abandoned requests, a failing batch, and draining on close."""

import asyncio
import threading
import time

import pytest

pytest.importorskip("prometheus_client")

from endokernel.serve.batcher import Batcher, QueueFull, TooLarge  # noqa: E402


def rows_of(*lengths, start=1):
    """Rows whose ids are distinct (a row's reward is its first id, so answers are checked against requests)."""
    rows_of.next = getattr(rows_of, "next", 0)
    out = []
    for n in lengths:
        rows_of.next += 1
        out.append(([rows_of.next] * n, start))
    return out


class Recorder:
    """A scoring function: reward = the row's first id, per-token = [len]; records each batch's row lengths and
    the thread it ran in."""

    def __init__(self, delay=0.0, fail_on=None):
        self.batches, self.threads, self.delay, self.fail_on = [], set(), delay, fail_on
        self.scored = set()  # first ids of the rows scored

    def __call__(self, rows):
        self.batches.append([len(ids) for ids, _ in rows])
        self.scored.update(ids[0] for ids, _ in rows)
        self.threads.add(threading.current_thread().name)
        if self.fail_on is not None and any(ids[0] == self.fail_on for ids, _ in rows):
            raise RuntimeError("out of memory")
        time.sleep(self.delay)
        return [(float(ids[0]), [float(len(ids))]) for ids, _ in rows]


def run(coroutine_fn, **options):
    async def main():
        recorder = options.pop("recorder", Recorder())
        settings = dict(max_batch_tokens=64, max_wait_s=0.05, max_queue_tokens=1000)
        settings.update(options)
        batcher = Batcher(recorder, **settings)
        batcher.start()
        try:
            return await asyncio.wait_for(coroutine_fn(batcher), 30), recorder, batcher
        finally:
            await batcher.close()

    return asyncio.run(main())


def check(answer, rows):
    assert answer == [(float(ids[0]), [float(len(ids))]) for ids, _ in rows]


def test_concurrent_requests_share_batches_bounded_by_padded_tokens():
    requests = [rows_of(10) for _ in range(12)] + [rows_of(20, 5)]

    async def go(batcher):
        return await asyncio.gather(*(batcher.submit(rows) for rows in requests))

    answers, recorder, batcher = run(go)
    for answer, rows in zip(answers, requests):
        check(answer, rows)
    assert len(recorder.batches) < len(requests)  # batched across requests
    assert all(len(b) * max(b) <= 64 for b in recorder.batches)  # rows x longest within max_batch_tokens
    assert sorted(n for b in recorder.batches for n in b) == sorted(len(ids) for r in requests for ids, _ in r)
    assert all(name.startswith("endokernel-score") for name in recorder.threads)  # never on the event loop
    assert batcher.pending_tokens == 0


def test_a_pair_longer_than_the_batch_gets_a_batch_of_its_own():
    async def go(batcher):
        return await asyncio.gather(batcher.submit(rows_of(100)), batcher.submit(rows_of(3)))

    _, recorder, _ = run(go)
    assert sorted(recorder.batches) == [[3], [100]]


def test_a_lone_request_goes_at_once():
    async def go(batcher):
        start = time.perf_counter()
        await batcher.submit(rows_of(5))
        return time.perf_counter() - start

    waited, recorder, _ = run(go, max_wait_s=5.0)
    assert waited < 2.5
    assert recorder.batches == [[5]]


def test_a_batch_waits_for_arriving_requests_up_to_max_wait():
    async def go(batcher):
        async def arrives(delay, rows):
            with batcher.arriving():  # being tokenized
                await asyncio.sleep(delay)
            return await batcher.submit(rows)

        start = time.perf_counter()
        first = asyncio.ensure_future(batcher.submit(rows_of(5)))
        soon, late = rows_of(6), rows_of(7)
        await asyncio.gather(first, arrives(0.05, soon), arrives(1.0, late))
        return time.perf_counter() - start

    waited, recorder, _ = run(go, max_wait_s=0.3)
    assert recorder.batches == [[5, 6], [7]]  # waited for the request 50 ms away, not for the one 1 s away
    assert waited < 5.0


def test_a_full_batch_goes_without_waiting():
    async def go(batcher):
        start = time.perf_counter()
        await batcher.submit(rows_of(*[8] * 8))  # 8 x 8 = 64 padded tokens: a full batch
        return time.perf_counter() - start

    waited, recorder, _ = run(go, max_wait_s=5.0)
    assert waited < 2.5
    assert recorder.batches == [[8] * 8]


def test_without_batching_each_call_scores_one_request():
    requests = [rows_of(4, 6) for _ in range(6)]

    async def go(batcher):
        return await asyncio.gather(*(batcher.submit(rows) for rows in requests))

    answers, recorder, _ = run(go, across_requests=False, max_wait_s=1.0)
    for answer, rows in zip(answers, requests):
        check(answer, rows)
    assert [sorted(b) for b in recorder.batches] == [[4, 6]] * 6  # a request's pairs together, alone


def test_a_batch_takes_the_pairs_nearest_the_oldest_in_length():
    """Padding is work: beside the oldest pair go the waiting pairs of nearly its length, not the next ones."""
    lengths = [30, 4, 4, 30, 5, 4, 4, 5]
    requests = [rows_of(n) for n in lengths]

    async def go(batcher):
        return await asyncio.gather(*(batcher.submit(rows) for rows in requests))

    answers, recorder, _ = run(go)
    for answer, rows in zip(answers, requests):
        check(answer, rows)
    assert recorder.batches[0] == [30, 30]  # the oldest pair and the other 30, not the 4 that came next
    assert sorted(recorder.batches[1]) == [4, 4, 4, 4, 5, 5]


def test_queue_limit_and_a_request_that_can_never_fit():
    async def go(batcher):
        first = asyncio.ensure_future(batcher.submit(rows_of(60)))
        await asyncio.sleep(0)
        assert batcher.pending_tokens == 60
        with pytest.raises(QueueFull):
            await batcher.submit(rows_of(50))
        with pytest.raises(TooLarge):
            await batcher.submit(rows_of(101))
        await first
        return await batcher.submit(rows_of(50))  # room again once the first was answered

    answer, _, batcher = run(go, max_queue_tokens=100, max_wait_s=0.2)
    assert len(answer) == 1 and batcher.pending_tokens == 0


def test_an_abandoned_request_does_not_break_the_others():
    blocker, kept, dropped, later = rows_of(10), rows_of(10), rows_of(10), rows_of(10)

    async def go(batcher):
        busy = asyncio.ensure_future(batcher.submit(blocker))
        await asyncio.sleep(0.05)  # the blocker is being scored: the next two wait
        keep = asyncio.ensure_future(batcher.submit(kept))
        gone = asyncio.ensure_future(batcher.submit(dropped))
        await asyncio.sleep(0.01)
        gone.cancel()  # its client went away while it waited
        await busy
        answer = await keep
        return answer, await batcher.submit(later)

    recorder = Recorder(delay=0.3)
    (answer, after), recorder, batcher = run(go, recorder=recorder)
    check(answer, kept)
    check(after, later)
    assert dropped[0][0][0] not in recorder.scored and kept[0][0][0] in recorder.scored
    assert batcher.pending_tokens == 0


def test_a_failing_batch_fails_only_its_requests():
    bad = rows_of(5)
    recorder = Recorder(fail_on=bad[0][0][0])

    async def go(batcher):
        with pytest.raises(RuntimeError, match="out of memory"):
            await batcher.submit(bad)
        good = rows_of(5)
        check(await batcher.submit(good), good)

    run(go, recorder=recorder, max_wait_s=0.0)


def test_close_answers_what_was_accepted_then_refuses():
    async def main():
        batcher = Batcher(Recorder(delay=0.05), max_batch_tokens=16, max_wait_s=10.0, max_queue_tokens=1000)
        batcher.start()
        requests = [rows_of(8) for _ in range(5)]
        with batcher.arriving():  # a request that never comes: close does not wait for it
            waiting = [asyncio.ensure_future(batcher.submit(rows)) for rows in requests]
            await asyncio.sleep(0.01)
            await asyncio.wait_for(batcher.close(), 5)
        for future, rows in zip(waiting, requests):
            check(future.result(), rows)
        with pytest.raises(QueueFull, match="shutting down"):
            await batcher.submit(rows_of(3))

    asyncio.run(main())
