#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pmtu_tests::fuzz::config_file(data));
