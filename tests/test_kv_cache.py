"""Block pool and KV-cache manager: reference counts, prefix hits, eviction order, no leaks."""
from __future__ import annotations

import random

from pagedawq.engine.kv_cache import KVCacheManager
from pagedawq.engine.request import Request
from pagedawq.engine.scheduler import Scheduler
from pagedawq.config import CacheConfig, SchedulerConfig
from pagedawq.sampling_params import SamplingParams


def req(rid: str, tokens: list[int]) -> Request:
    return Request(rid, tokens, SamplingParams(max_tokens=8), max_model_len=10_000)


def test_prefix_hits_share_blocks_and_cap_at_last_token():
    kv = KVCacheManager(num_blocks=10, block_size=4)
    a = req("a", list(range(10)))              # 2 full blocks + 2 tokens
    assert kv.get_computed_blocks(a) == ([], 0)
    assert len(kv.allocate_slots(a, 10)) == 3
    b = req("b", list(range(8)))               # exactly 2 full blocks: the last must be recomputed
    hits, n = kv.get_computed_blocks(b)
    assert n == 4 and [h.block_id for h in hits] == kv.block_ids("a")[:1]
    c = req("c", list(range(9)))
    hits, n = kv.get_computed_blocks(c)
    assert n == 8 and [h.block_id for h in hits] == kv.block_ids("a")[:2]
    kv.allocate_slots(c, 1, hits)
    assert kv.block_ids("c")[:2] == kv.block_ids("a")[:2]
    assert kv.pool.blocks[kv.block_ids("a")[0]].ref_cnt == 2
    kv.free(a)
    kv.free(c)
    assert kv.num_free_blocks == 10
    assert all(b.ref_cnt == 0 for b in kv.pool.blocks)


def test_different_prefix_does_not_hit():
    kv = KVCacheManager(num_blocks=10, block_size=4)
    a = req("a", [1, 2, 3, 4, 5, 6, 7, 8, 9])
    kv.allocate_slots(a, 9)
    b = req("b", [1, 2, 3, 4, 0, 6, 7, 8, 9])
    _, n = kv.get_computed_blocks(b)
    assert n == 4   # first block only


def test_freed_cached_blocks_survive_until_evicted_lru():
    kv = KVCacheManager(num_blocks=4, block_size=2)
    a = req("a", [1, 2, 3, 4, 5])
    kv.allocate_slots(a, 5)        # 3 blocks, 2 full & hashed
    kv.free(a)
    assert kv.num_free_blocks == 4
    again = req("a2", [1, 2, 3, 4, 5])
    hits, n = kv.get_computed_blocks(again)
    assert n == 4 and len(hits) == 2
    # Allocating 4 fresh blocks must evict the cached ones (unhashed first, then LRU).
    other = req("o", [9] * 8)
    assert kv.allocate_slots(other, 8) is not None
    assert kv.get_computed_blocks(req("a3", [1, 2, 3, 4, 5]))[1] == 0


def test_allocation_failure_changes_nothing():
    kv = KVCacheManager(num_blocks=2, block_size=4)
    a = req("a", list(range(12)))
    assert kv.allocate_slots(a, 12) is None
    assert kv.num_free_blocks == 2 and "a" not in kv.req_blocks


def test_random_request_stream_never_leaks_blocks():
    """1,000 random requests with random prefixes, steps, preemptions and aborts: reference counts
    always equal the number of holders, and everything returns to the pool."""
    rng = random.Random(0)
    sched = Scheduler(SchedulerConfig(max_num_seqs=16, max_num_batched_tokens=64, max_model_len=96),
                      CacheConfig(block_size=4, num_blocks=48, enable_prefix_caching=True))
    prefixes = [[rng.randrange(100) for _ in range(rng.randrange(1, 30))] for _ in range(8)]
    submitted = 0
    while submitted < 1000 or sched.has_unfinished_requests():
        for _ in range(rng.randrange(0, 4)):
            if submitted < 1000:
                prompt = rng.choice(prefixes) + [rng.randrange(100) for _ in range(rng.randrange(1, 20))]
                r = Request(f"r{submitted}", prompt, SamplingParams(max_tokens=rng.randrange(1, 12), ignore_eos=True),
                            max_model_len=96)
                sched.add_request(r)
                submitted += 1
        out = sched.schedule()
        assert out.num_tokens <= 64
        sched.update(out, {s.request_id: rng.randrange(100) for s in out.seqs})
        if rng.random() < 0.1 and sched.requests:
            from pagedawq.engine.request import RequestStatus
            sched.finish_requests([rng.choice(list(sched.requests))], RequestStatus.FINISHED_ABORTED)
        holders: dict[int, int] = {}
        for blocks in sched.kv.req_blocks.values():
            for b in blocks:
                holders[b.block_id] = holders.get(b.block_id, 0) + 1
        for b in sched.kv.pool.blocks:
            assert b.ref_cnt == holders.get(b.block_id, 0)
        assert sched.kv.num_free_blocks == sum(1 for b in sched.kv.pool.blocks if b.ref_cnt == 0)
    assert sched.kv.num_free_blocks == 48
    assert not sched.kv.req_blocks
    assert sched.kv.num_hits > 0
