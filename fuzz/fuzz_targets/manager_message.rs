//! A text frame from the manager: the parser never panics, whatever the JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = quoll::manager::protocol::parse(text);
    }
});
