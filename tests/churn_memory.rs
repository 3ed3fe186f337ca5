//! Memory under connection churn: what the pool holds is bounded by its
//! size, not by how many connections it opened. Each connection opened used
//! to schedule idle and lifetime entries in the timer wheel that stayed
//! there until their deadline (30 minutes with the default lifetime), so
//! connects returned broken grew the process by about 86 bytes each.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

use common::{TestManager, paused};
use latchless::{Pool, Pooled};

/// Counts the bytes allocated and not yet freed, on every thread.
struct Net;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Net {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Net = Net;

#[test]
fn memory_is_bounded_by_the_pool_size_not_by_the_connect_rate() {
    let (m, t) = TestManager::new();
    // The default idle timeout and lifetime (10 and 30 minutes), on a mock
    // clock that never reaches them: nothing expires during the test.
    let (clock, _mock) = latchless::Clock::mock();
    let pool = Pool::builder(m)
        .max_size(4)
        .clock(clock)
        .background(false)
        .build()
        .unwrap();
    let rt = paused();
    let churn = |n: usize| {
        rt.block_on(async {
            for i in 0..n {
                let mut c = pool.get().await.unwrap();
                Pooled::mark_broken(&mut c);
                drop(c);
                if i % 1_000 == 0 {
                    pool.maintain();
                }
            }
            pool.maintain();
        })
    };
    // Warm up: every structure reaches its working size.
    churn(2_000);
    let before = LIVE.load(Relaxed);
    churn(100_000);
    let grown = LIVE.load(Relaxed) - before;
    assert_eq!(t.opened(), 102_000);
    assert_eq!(pool.state().size, 0);
    // 100,000 connects at 86 bytes each held 8.6 MB; the harness's own
    // allocations on other threads stay far below the bound.
    assert!(
        grown < 512 * 1024,
        "grew by {grown} bytes over 100,000 connects"
    );
}
