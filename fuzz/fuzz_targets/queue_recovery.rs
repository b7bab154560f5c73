#![no_main]
//! See `crew_shm::fuzzing::queue_recovery`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| crew_shm::fuzzing::queue_recovery(data));
