//! ID translation of request paths, queries and JSON bodies: never panics,
//! and a request with nothing mapped comes back unchanged.
#![no_main]

use cutover::compare::pointer::{Pattern, PatternSet};
use cutover::idmap::{Canonical, IdMap, IdPair, Translation};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (String, Vec<u8>, Vec<(String, String)>, u8)| {
    let (path_and_query, body, pairs, segment) = input;
    let map = IdMap::new(Canonical::AsIs);
    for (primary_id, shadow_id) in &pairs {
        let _ = map.insert(&IdPair {
            kind: "tasks".into(),
            primary_id: primary_id.clone(),
            shadow_id: shadow_id.clone(),
        });
    }
    let mut body_ids = PatternSet::default();
    body_ids.push(Pattern::parse("/**/id").unwrap(), "tasks".to_string());
    let translation = Translation {
        path: vec![(usize::from(segment % 4), "tasks".to_string())],
        query: vec![("id".to_string(), "tasks".to_string())],
        body: body_ids,
    };
    let out = translation.apply(&map, &path_and_query, &body);
    if pairs.is_empty() {
        assert_eq!(out.path_and_query, None);
        assert_eq!(out.body, None);
    }
});
