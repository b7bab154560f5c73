#![no_main]
//! See `crew_process::fuzzing::frame_reader`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| crew_process::fuzzing::frame_reader(data));
