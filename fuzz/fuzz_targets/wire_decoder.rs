#![no_main]
//! See `crew_process::fuzzing::wire_decoder`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| crew_process::fuzzing::wire_decoder(data));
