//! `traceparent` values from clients: parsing never panics, and a value it
//! accepts gives a child that parses again to the same trace.
#![no_main]

use cutover::trace::TraceParent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Vec<u8>, [u8; 8])| {
    let (value, span_id) = input;
    if let Some(parent) = TraceParent::parse(&value) {
        if span_id != [0; 8] {
            let child = parent.child(span_id).expect("a parsed value gives a child");
            let again = TraceParent::parse(child.as_bytes()).expect("the child parses");
            assert_eq!(again.trace_id(), parent.trace_id());
        }
    }
});
