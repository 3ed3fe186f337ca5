//! Loom models of latchless's concurrency invariants live in `tests/`;
//! they compile only with `RUSTFLAGS="--cfg latchless_loom"` (see the
//! README). This library is empty.
