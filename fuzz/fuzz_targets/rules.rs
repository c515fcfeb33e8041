//! Fuzz target `rules`: the body is `jpki_access::fuzzing_rules::rules`, shared with tests/fuzz_corpus.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jpki_access::fuzzing_rules::rules(data));
