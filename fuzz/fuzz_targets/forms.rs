//! Fuzz target `forms`: the body is `jpki_access::fuzzing::forms`, shared with tests/fuzz_corpus.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jpki_access::fuzzing::forms(data));
