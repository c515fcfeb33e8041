//! Fuzz target `cidr`: the body is `jpki_access::fuzzing::cidr`, shared with tests/fuzz_corpus.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jpki_access::fuzzing::cidr(data));
