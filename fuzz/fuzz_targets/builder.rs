//! Arbitrary values for every Builder setter: build() never panics, refuses exactly the invalid combinations and names the field.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    latchless_model::check_builder(data);
});
