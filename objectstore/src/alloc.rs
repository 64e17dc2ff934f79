//! Space in the segment: 64-byte-aligned blocks (OS-7) from an O(1)
//! offset allocator, behind a trait so tests can fail the Nth allocation.

use std::collections::HashMap;

/// Every object starts on a 64-byte boundary (OS-7).
pub const ALIGN: usize = 64;

/// The most objects one segment holds at once.
pub const MAX_OBJECTS: u32 = 1 << 17;

/// A range of the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Block {
    /// Byte offset in the segment, a multiple of [`ALIGN`].
    pub offset: usize,
    /// Bytes asked for (the reservation is rounded up to [`ALIGN`]).
    pub len: usize,
}

/// Hands out and takes back blocks of the segment.
pub trait SegmentAllocator: Send + std::fmt::Debug {
    /// A block of at least `bytes`, or `None` when no free region is large enough.
    fn allocate(&mut self, bytes: usize) -> Option<Block>;
    /// Gives a block back.
    fn free(&mut self, block: Block);
    /// Free bytes in total.
    fn free_bytes(&self) -> usize;
    /// The largest single allocation that would succeed now.
    fn largest_free(&self) -> usize;
    /// The segment's size.
    fn capacity(&self) -> usize;
}

/// The production allocator: offset-allocator over 64-byte units.
pub struct OffsetAlloc {
    inner: offset_allocator::Allocator,
    live: HashMap<usize, offset_allocator::Allocation>,
    capacity: usize,
}

impl std::fmt::Debug for OffsetAlloc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffsetAlloc")
            .field("capacity", &self.capacity)
            .field("live", &self.live.len())
            .finish()
    }
}

fn units(bytes: usize) -> Option<u32> {
    u32::try_from(bytes.max(1).div_ceil(ALIGN)).ok()
}

impl OffsetAlloc {
    /// Manages `capacity` bytes (rounded down to [`ALIGN`]; at most 256 GiB).
    pub fn new(capacity: usize) -> OffsetAlloc {
        let total = u32::try_from(capacity / ALIGN).unwrap_or(u32::MAX);
        // offset-allocator allocates its node table up front: 128 Ki live
        // objects cost about 4 MB of RSS.
        let max_allocs = total.clamp(16, MAX_OBJECTS);
        OffsetAlloc {
            inner: offset_allocator::Allocator::with_max_allocs(total, max_allocs),
            live: HashMap::new(),
            capacity: total as usize * ALIGN,
        }
    }
}

impl SegmentAllocator for OffsetAlloc {
    fn allocate(&mut self, bytes: usize) -> Option<Block> {
        let a = self.inner.allocate(units(bytes)?)?;
        let offset = a.offset as usize * ALIGN;
        self.live.insert(offset, a);
        Some(Block { offset, len: bytes })
    }

    fn free(&mut self, block: Block) {
        if let Some(a) = self.live.remove(&block.offset) {
            self.inner.free(a);
        }
    }

    fn free_bytes(&self) -> usize {
        self.inner.storage_report().total_free_space as usize * ALIGN
    }

    fn largest_free(&self) -> usize {
        self.inner.storage_report().largest_free_region as usize * ALIGN
    }

    fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Test double: fails allocation number `fail_on` (1-based) and every
/// `every`-th after it, delegating the rest.
#[derive(Debug)]
pub struct FailingAlloc<A> {
    inner: A,
    calls: u64,
    fail_on: u64,
    every: u64,
}

impl<A: SegmentAllocator> FailingAlloc<A> {
    /// Fails call `fail_on`, then every `every` calls (0: only once).
    pub fn new(inner: A, fail_on: u64, every: u64) -> Self {
        FailingAlloc {
            inner,
            calls: 0,
            fail_on,
            every,
        }
    }
}

impl<A: SegmentAllocator> SegmentAllocator for FailingAlloc<A> {
    fn allocate(&mut self, bytes: usize) -> Option<Block> {
        self.calls += 1;
        let n = self.calls;
        let fail = n == self.fail_on
            || (self.every > 0
                && n > self.fail_on
                && (n - self.fail_on).is_multiple_of(self.every));
        if fail {
            None
        } else {
            self.inner.allocate(bytes)
        }
    }
    fn free(&mut self, block: Block) {
        self.inner.free(block)
    }
    fn free_bytes(&self) -> usize {
        self.inner.free_bytes()
    }
    fn largest_free(&self) -> usize {
        self.inner.largest_free()
    }
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_7_blocks_are_aligned_and_disjoint() {
        let mut a = OffsetAlloc::new(1 << 20);
        let blocks: Vec<Block> = (1..100).map(|i| a.allocate(i * 37).unwrap()).collect();
        for b in &blocks {
            assert_eq!(b.offset % ALIGN, 0);
        }
        let mut sorted = blocks.clone();
        sorted.sort_by_key(|b| b.offset);
        for w in sorted.windows(2) {
            assert!(w[0].offset + w[0].len <= w[1].offset);
        }
        blocks.into_iter().for_each(|b| a.free(b));
        assert_eq!(a.free_bytes(), 1 << 20);
    }

    /// Fragmentation after churn: random sizes allocated and half freed at
    /// random, then how much of the free space one allocation can still use.
    #[test]
    fn fragmentation_is_measured() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let cap = 64 << 20;
        let mut a = OffsetAlloc::new(cap);
        let mut live = Vec::new();
        for _ in 0..20_000 {
            if rng.random_bool(0.55) {
                if let Some(b) = a.allocate(rng.random_range(64..256 << 10)) {
                    live.push(b);
                }
            } else if !live.is_empty() {
                let i = rng.random_range(0..live.len());
                a.free(live.swap_remove(i));
            }
        }
        let used: usize = live.iter().map(|b| b.len).sum();
        let free = a.free_bytes();
        let frag = 1.0 - a.largest_free() as f64 / free.max(1) as f64;
        println!(
            "after churn: {} live objects, {:.1} MiB used, {:.1} MiB free, largest free {:.1} MiB, external fragmentation {:.1}%",
            live.len(),
            used as f64 / (1 << 20) as f64,
            free as f64 / (1 << 20) as f64,
            a.largest_free() as f64 / (1 << 20) as f64,
            frag * 100.0
        );
        assert!(used + free <= cap);
        live.into_iter().for_each(|b| a.free(b));
        assert_eq!(
            a.free_bytes(),
            cap,
            "freeing everything restores one free region"
        );
        assert_eq!(a.largest_free(), cap);
    }

    #[test]
    fn failing_alloc_fails_the_nth() {
        let mut a = FailingAlloc::new(OffsetAlloc::new(1 << 16), 2, 0);
        assert!(a.allocate(10).is_some());
        assert!(a.allocate(10).is_none());
        assert!(a.allocate(10).is_some());
    }
}
