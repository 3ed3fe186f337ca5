//! The pool's `tracing` events carry its name and say why, in a test
//! process of their own: `tracing` caches each callsite's interest
//! globally, and other tests of a shared binary hitting the same callsites
//! at the same moment (without a subscriber) made this check flaky.

mod common;

use std::sync::atomic::Ordering::SeqCst;

use common::{Capture, mocked_quiet, ms, paused};
use latchless::Pooled;

#[test]
fn tracing_events_carry_the_pool_name_and_why() {
    use tracing::Level;
    let capture = Capture::default();
    let (pool, t, _mock) = mocked_quiet(|b| b.name("orders").max_size(1).fail_fast(true));
    tracing::subscriber::with_default(capture.clone(), || {
        // Other tests may have hit these callsites first, with no
        // subscriber: make them ask ours again.
        tracing::callsite::rebuild_interest_cache();
        paused().block_on(async {
            assert!(pool.health().is_healthy());
            t.fail_next.store(1, SeqCst);
            assert!(pool.get().await.is_err());
            assert!(!pool.health().is_healthy());
            let mut c = pool.get().await.unwrap();
            assert!(pool.get_timeout(ms(10)).await.is_err());
            Pooled::mark_broken(&mut c);
            drop(c);
        });
    });
    let name = "pool=orders";
    assert_eq!(
        capture.find(&["connect failed", name, "connection refused (test)"]),
        Some(Level::WARN)
    );
    assert_eq!(
        capture.find(&["alert firing", name, "alert=\"backend_down\""]),
        Some(Level::WARN)
    );
    assert_eq!(
        capture.find(&["get timed out", name, "kind=\"waiting\""]),
        Some(Level::INFO)
    );
    assert_eq!(
        capture.find(&["connection closed", name, "reason=\"broken\""]),
        Some(Level::DEBUG)
    );
}
