//! Route templates and request paths: parsing and matching never panic.
#![no_main]

use cutover::route::{MirrorPolicy, Route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (String, String, u8)| {
    let (template, path, method) = input;
    let methods = ["GET", "POST", "PATCH", "DELETE", "PROPFIND"];
    let method = http::Method::from_bytes(methods[usize::from(method) % methods.len()].as_bytes()).unwrap();
    if let Ok(route) = Route::new("fuzz", &template, MirrorPolicy::Compare, 1.0, None) {
        let _ = route.matches(&method, &path);
    }
});
