//! A client's request target: path cleaning (percent-decoding, dot segments, traversal) and
//! query parsing. A cleaned path must never climb out of the tree.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mirrorfleet_redirector::request::{clean_path, query_has, query_value};

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if let Ok(clean) = clean_path(path) {
        assert!(
            !clean.split('/').any(|s| s == ".."),
            "{path:?} cleaned to {clean:?}"
        );
    }
    for key in ["mirrorlist", "json", "stats", "sha256", "https"] {
        let _ = query_has(query, key);
        let _ = query_value(query, key);
    }
});
