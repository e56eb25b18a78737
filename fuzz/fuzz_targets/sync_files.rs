//! Files a mirror or an upstream publishes about its sync: trace and timestamp files, and
//! checksum files (`SHA256SUMS` and the like, GNU and BSD formats).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mirrorfleet_scan::{checksums, trace};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(t) = trace::parse(&text) {
        assert!(t > 0);
    }
    for len in [32, 20, 16] {
        for (name, digest) in checksums::parse(&text, len) {
            assert_eq!(digest.len(), len, "{name}");
        }
    }
});
