"""Paged KV-cache bookkeeping: which physical blocks each request owns, and prefix caching.

Pure Python; the tensors live in the workers. A block holds ``block_size`` consecutive tokens of
one sequence. A *full* block is identified by a chained hash ``h_i = H(h_{i-1}, tokens_i)`` so two
requests with the same prefix share its blocks. Freed blocks keep their contents and hash until a
new allocation evicts them: unhashed blocks are reused first, then hashed ones in LRU order.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from pagedawq.engine.request import Request


@dataclass(eq=False)
class KVCacheBlock:
    block_id: int
    ref_cnt: int = 0
    block_hash: int | None = None
    # What the hash stands for, compared on a hit so a hash collision can never serve wrong KV.
    parent_hash: int | None = None
    token_ids: tuple[int, ...] = field(default=())


def hash_block(parent_hash: int | None, token_ids: tuple[int, ...]) -> int:
    return hash((parent_hash, token_ids))


class BlockPool:
    """All physical blocks, a free queue (O(1) pop/push/remove) and the hash -> block map."""

    def __init__(self, num_blocks: int, enable_caching: bool) -> None:
        self.blocks = [KVCacheBlock(i) for i in range(num_blocks)]
        self.enable_caching = enable_caching
        # Front = next to reuse. Unhashed frees go to the front, hashed ones to the back (LRU).
        self.free: OrderedDict[int, KVCacheBlock] = OrderedDict((b.block_id, b) for b in self.blocks)
        self.cached: dict[int, KVCacheBlock] = {}
        self.num_evictions = 0

    @property
    def num_free_blocks(self) -> int:
        return len(self.free)

    def lookup(self, parent_hash: int | None, token_ids: tuple[int, ...]) -> KVCacheBlock | None:
        block = self.cached.get(hash_block(parent_hash, token_ids))
        if block is not None and block.parent_hash == parent_hash and block.token_ids == token_ids:
            return block
        return None

    def take(self, n: int) -> list[KVCacheBlock]:
        if n > len(self.free):
            raise RuntimeError(f"asked for {n} blocks with {len(self.free)} free")
        taken = []
        for _ in range(n):
            _, block = self.free.popitem(last=False)
            if block.block_hash is not None:
                self._evict(block)
            block.ref_cnt = 1
            taken.append(block)
        return taken

    def _evict(self, block: KVCacheBlock) -> None:
        if self.cached.get(block.block_hash) is block:
            del self.cached[block.block_hash]
        block.block_hash, block.parent_hash, block.token_ids = None, None, ()
        self.num_evictions += 1

    def touch(self, blocks: list[KVCacheBlock]) -> None:
        """Take another reference on cache-hit blocks (reviving them from the free queue)."""
        for block in blocks:
            if block.ref_cnt == 0:
                del self.free[block.block_id]
            block.ref_cnt += 1

    def release(self, blocks: list[KVCacheBlock]) -> None:
        """Drop one reference on each block. Pass a request's blocks tail first, so that among
        equally old blocks the ends of sequences are evicted before their shared prefixes."""
        for block in blocks:
            block.ref_cnt -= 1
            if block.ref_cnt < 0:
                raise RuntimeError(f"block {block.block_id} freed more often than allocated")
            if block.ref_cnt == 0:
                self.free[block.block_id] = block
                if block.block_hash is None:
                    self.free.move_to_end(block.block_id, last=False)

    def register(self, block: KVCacheBlock, parent_hash: int | None, token_ids: tuple[int, ...]) -> int:
        h = hash_block(parent_hash, token_ids)
        if block.block_hash is None:
            block.block_hash, block.parent_hash, block.token_ids = h, parent_hash, token_ids
            self.cached.setdefault(h, block)
        return h


class KVCacheManager:
    """Per-request block tables over a :class:`BlockPool` (the narrow interface the scheduler uses)."""

    def __init__(self, num_blocks: int, block_size: int, enable_caching: bool = True) -> None:
        self.block_size = block_size
        self.enable_caching = enable_caching
        self.pool = BlockPool(num_blocks, enable_caching)
        self.req_blocks: dict[str, list[KVCacheBlock]] = {}
        self.req_hashes: dict[str, list[int]] = {}   # chained hashes of the request's registered full blocks
        self.num_queries = 0
        self.num_hits = 0   # tokens served from the prefix cache

    @property
    def num_blocks(self) -> int:
        return len(self.pool.blocks)

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free_blocks

    @property
    def usage(self) -> float:
        return 1.0 - self.num_free_blocks / max(1, self.num_blocks)

    def block_ids(self, request_id: str) -> list[int]:
        return [b.block_id for b in self.req_blocks.get(request_id, ())]

    def get_computed_blocks(self, request: Request) -> tuple[list[KVCacheBlock], int]:
        """Longest run of full cached blocks matching the request's tokens, capped so at least the
        last token is recomputed (its logits are needed to sample)."""
        if not self.enable_caching:
            return [], 0
        tokens = request.all_token_ids
        max_blocks = (len(tokens) - 1) // self.block_size
        hits, parent = [], None
        for i in range(max_blocks):
            chunk = tuple(tokens[i * self.block_size:(i + 1) * self.block_size])
            block = self.pool.lookup(parent, chunk)
            if block is None:
                break
            hits.append(block)
            parent = block.block_hash
        self.num_queries += len(tokens)
        self.num_hits += len(hits) * self.block_size
        return hits, len(hits) * self.block_size

    def allocate_slots(self, request: Request, num_new_tokens: int,
                       computed_blocks: list[KVCacheBlock] = ()) -> list[KVCacheBlock] | None:
        """Make room for ``num_new_tokens`` more tokens after the computed ones (taking the prefix
        hits in ``computed_blocks``); ``None`` when the pool cannot, in which case nothing changed."""
        blocks = self.req_blocks.setdefault(request.request_id, [])
        computed = request.num_computed_tokens + len(computed_blocks) * self.block_size
        needed = -(-(computed + num_new_tokens) // self.block_size) - len(blocks) - len(computed_blocks)
        revived = sum(1 for b in computed_blocks if b.ref_cnt == 0)
        if needed > self.pool.num_free_blocks - revived:
            if not blocks:
                del self.req_blocks[request.request_id]
            return None
        self.pool.touch(list(computed_blocks))
        blocks.extend(computed_blocks)
        new = self.pool.take(max(0, needed))
        blocks.extend(new)
        if self.enable_caching:
            self._register_full_blocks(request, blocks, computed + num_new_tokens)
        return new

    def _register_full_blocks(self, request: Request, blocks: list[KVCacheBlock], num_tokens: int) -> None:
        # Registered as soon as allocated: within one forward, every layer writes all new K/V
        # before attending, so a request scheduled in the same step may already share them.
        hashes = self.req_hashes.setdefault(request.request_id, [])
        n_full = min(num_tokens, request.num_tokens) // self.block_size
        for i in range(len(hashes), n_full):
            chunk = tuple(request.token_slice(i * self.block_size, (i + 1) * self.block_size))
            hashes.append(self.pool.register(blocks[i], hashes[-1] if hashes else None, chunk))

    def free(self, request: Request) -> None:
        blocks = self.req_blocks.pop(request.request_id, [])
        self.req_hashes.pop(request.request_id, None)
        self.pool.release(list(reversed(blocks)))

    def reset_prefix_cache(self) -> bool:
        """Forget every cached hash (only when no request holds blocks)."""
        if any(self.req_blocks.values()):
            return False
        for block in self.pool.blocks:
            if block.block_hash is not None:
                self.pool._evict(block)
        return True
