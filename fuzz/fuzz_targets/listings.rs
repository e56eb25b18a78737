//! What a mirror answers when scanned: an rsync listing, FTP `LIST` and `MLSD` lines, an HTTP
//! autoindex page. The first byte picks the parser; the rest is the server's text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mirrorfleet_scan::{Limits, ftp, http, rsync};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let limits = Limits {
        max_entries: 10_000,
        max_line: 4096,
        ..Limits::default()
    };
    match which % 3 {
        0 => {
            let _ = rsync::parse_listing(&text, &limits);
            for line in text.lines() {
                let _ = rsync::parse_line(line);
            }
        }
        1 => {
            for line in text.lines() {
                let _ = ftp::parse_line(line, true);
                let _ = ftp::parse_line(line, false);
            }
        }
        _ => {
            for entry in http::parse_autoindex(&text) {
                assert!(!entry.name.is_empty() && !entry.name.contains('/'));
            }
        }
    }
});
