//! Any bytes as the start of a client connection, through what Ferry does
//! with them before Pingora's parser and before routing: the header bound
//! (split at every byte), the target's normalisation, the host checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ferry::fuzzing::request_path(data);
});
