//! Any bytes through ferry-wire and through Pingora 0.9's own HTTP/1
//! sessions: the first byte chooses a request, a response or a response to
//! HEAD; any disagreement in verdict, head or body is a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../wire/tests/differential/mod.rs"]
mod differential;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = differential::check_tagged(data) {
        panic!("ferry-wire and Pingora disagree: {e}");
    }
});
