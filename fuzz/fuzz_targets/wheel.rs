//! Arbitrary insert / cancel / reschedule / advance sequences on the timer wheel against a BTreeMap reference: the same entries fire, none early, none lost, none twice, in deadline order.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    latchless::fuzzing::wheel_ops(data);
});
