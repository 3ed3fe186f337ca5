//! Arbitrary get / try_get / release / detach / broken / failing connect / failing or hanging check / clock advance / maintenance / close / cancelled get sequences, checked step by step against the reference model (I1, I2, I3, I6, exact state).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    latchless_model::check_pool_ops(data);
});
