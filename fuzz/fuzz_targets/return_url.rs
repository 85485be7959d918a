#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    passerelle::fuzzing::return_url(data);
});
