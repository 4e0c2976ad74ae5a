//! GraphQL request bodies from clients: reading the operation never
//! panics, and a body is a read only when every operation it runs is a
//! query (the same body wrapped in a batch says the same).
#![no_main]

use cutover::route::access::{graphql_reads_only, selected_operation, Operation};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let read = graphql_reads_only(body);
    if read {
        assert!(!body.is_empty(), "an empty body runs nothing");
    }
    if let Ok(document) = std::str::from_utf8(body) {
        let as_json = serde_json::json!({ "query": document }).to_string();
        let wrapped = graphql_reads_only(as_json.as_bytes());
        assert_eq!(wrapped, selected_operation(document, None) == Some(Operation::Query));
        let batch = format!("[{as_json}, {as_json}]");
        assert_eq!(graphql_reads_only(batch.as_bytes()), wrapped);
    }
});
