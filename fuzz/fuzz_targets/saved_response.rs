//! Saved responses (`cutover diff` input) never panic the parser.
#![no_main]

use cutover::exchange::CapturedResponse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = CapturedResponse::from_saved(data);
});
