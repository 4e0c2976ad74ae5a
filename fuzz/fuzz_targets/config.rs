//! Any config text gets a config or an error, never a panic.
#![no_main]

use cutover::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, "fuzz.toml", &|_| None);
    }
});
