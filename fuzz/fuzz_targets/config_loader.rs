//! Any bytes as a configuration file: the loader must answer (never
//! panic), and every problem must carry a position.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = ferry_conf::load_str("fuzz.yaml", text) {
        assert!(!errors.0.is_empty());
        for e in &errors.0 {
            assert!(e.line >= 1 && e.column >= 1, "{e}");
        }
    }
});
