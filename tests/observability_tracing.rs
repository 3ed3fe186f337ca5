//! The pool's `tracing` events carry its name and say why, in a test
//! process of their own: `tracing` caches each callsite's interest
//! globally, and other tests of a shared binary hitting the same callsites
//! at the same moment (without a subscriber) made this check flaky.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;

use common::{mocked_quiet, ms, paused};
use latchless::Pooled;

/// `|read - exact| <= exact / 64`, the histogram's documented error.
/// Collects events as `(level, "field=value ...")`.
#[derive(Clone, Default)]
struct Capture(Arc<std::sync::Mutex<Vec<(tracing::Level, String)>>>);

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                use std::fmt::Write;
                let _ = write!(self.0, "{}={:?} ", f.name(), v);
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        let mut log = self.0.lock().unwrap();
        log.push((*event.metadata().level(), fields.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

impl Capture {
    /// The one event whose fields contain every one of `parts`.
    fn find(&self, parts: &[&str]) -> Option<tracing::Level> {
        let log = self.0.lock().unwrap();
        let found: Vec<_> = log
            .iter()
            .filter(|(_, f)| parts.iter().all(|p| f.contains(p)))
            .collect();
        assert!(found.len() <= 1, "{parts:?} more than once: {log:?}");
        found.first().map(|(l, _)| *l)
    }
}

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
