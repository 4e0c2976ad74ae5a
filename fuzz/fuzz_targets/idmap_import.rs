//! ID-mapping files (JSON and CSV) from outside: parsing and importing
//! never panic, and every row is either imported or reported with a line.
#![no_main]

use cutover::idmap::{parse_import, Canonical, IdMap, ImportFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (String, bool, bool)| {
    let (text, json, uuid) = input;
    let format = if json { ImportFormat::Json } else { ImportFormat::Csv };
    if let Ok(parsed) = parse_import(&text, format) {
        let rows = parsed.rows.len() + parsed.problems.len();
        let map = IdMap::new(if uuid { Canonical::Uuid } else { Canonical::AsIs });
        let report = map.import(parsed);
        assert_eq!(report.added.len() + report.known + report.problems.len(), rows);
    }
});
