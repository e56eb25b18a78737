use super::*;

#[test]
fn nginx_autoindex() {
    let html = r#"<html><head><title>Index of /debian/</title></head><body><h1>Index of /debian/</h1><hr><pre><a href="../">../</a>
<a href="dists/">dists/</a>                                             22-Nov-2026 01:02                   -
<a href="a%20b%20%C3%BC.iso">a b ü.iso</a>                                 22-Nov-2026 01:02             1048576
<a href="README">README</a>                                           22-Nov-2026 01:03                  12
</pre><hr></body></html>"#;
    let e = parse_autoindex(html);
    assert_eq!(e.len(), 3);
    assert_eq!(
        e[0],
        Entry {
            name: "dists".into(),
            dir: true,
            size: None,
            mtime: time::unix(2026, 11, 22, 1, 2, 0)
        }
    );
    assert_eq!(e[1].name, "a b ü.iso");
    assert_eq!(e[1].size, Some(Size::Exact(1_048_576)));
    assert_eq!(e[2].mtime, time::unix(2026, 11, 22, 1, 3, 0));
}

#[test]
fn apache_autoindex() {
    let html = r#"<table><tr><th><a href="?C=N;O=D">Name</a></th></tr>
<tr><td valign="top"><img src="/icons/back.gif" alt="[PARENTDIR]"></td><td><a href="/pub/">Parent Directory</a></td><td>&nbsp;</td><td align="right">  - </td></tr>
<tr><td valign="top"><img src="/icons/folder.gif" alt="[DIR]"></td><td><a href="releases/">releases/</a></td><td align="right">2026-11-22 01:02  </td><td align="right">  - </td></tr>
<tr><td valign="top"><img src="/icons/unknown.gif" alt="[   ]"></td><td><a href="vlc-3.0.iso">vlc-3.0.iso</a></td><td align="right">2026-11-22 01:02  </td><td align="right">1.2M</td></tr>
</table>"#;
    let e = parse_autoindex(html);
    assert_eq!(
        e.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["releases", "vlc-3.0.iso"]
    );
    assert_eq!(e[1].size, Some(Size::Approx(1.2, 1 << 20)));
    assert!(e[1].size.unwrap().matches(1_250_000));
    assert!(!e[1].size.unwrap().matches(2_000_000));
    assert_eq!(e[1].mtime, time::unix(2026, 11, 22, 1, 2, 0));
}

#[test]
fn lighttpd_autoindex() {
    let html = r#"<tr class="d"><td class="n"><a href="../">..</a>/</td><td class="m">&nbsp;</td><td class="s">- &nbsp;</td></tr>
<tr><td class="n"><a href="file.tar.xz">file.tar.xz</a></td><td class="m">2026-Nov-22 01:02:03</td><td class="s">4.0K</td><td class="t">application/x-xz</td></tr>"#;
    let e = parse_autoindex(html);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].mtime, time::unix(2026, 11, 22, 1, 2, 3));
    assert_eq!(e[0].size, Some(Size::Approx(4.0, 1024)));
}

#[test]
fn hostile_links_are_ignored() {
    let html = r#"<a href="http://evil.example/x">x</a><a href="/etc/passwd">p</a><a href="..%2f..%2fetc">e</a><a href="a%2Fb">s</a><a href="%ZZ">bad</a><a href='ok'>ok</a> 5"#;
    let e = parse_autoindex(html);
    assert_eq!(
        e.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["ok"]
    );
}

/// Found by fuzzing: a size-like word ending in a multi-byte character split a string inside
/// that character (a panic in release builds too).
#[test]
fn non_ascii_words_after_a_link_are_not_sizes() {
    let e = parse_autoindex("<a href=\x01>\u{fc}");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].size, None);
    assert_eq!(parse_size("1.2\u{fc}"), None);
    assert_eq!(parse_size("\u{fc}"), None);
    assert_eq!(parse_size("1.2M"), Some(Size::Approx(1.2, 1 << 20)));
    assert_eq!(parse_size("3KiB"), Some(Size::Approx(3.0, 1 << 10)));
}

/// Found by fuzzing: links without `</a>` (or tags without `>`) made each link search to the
/// end of the page — quadratic, 100 s for 1 MiB. The searches now look at each byte a bounded
/// number of times whatever the page holds.
#[test]
fn hostile_pages_are_parsed_in_linear_time() {
    let unclosed = "<a href=x>".repeat(100_000);
    let (entries, scanned) = parse_autoindex_counted(&unclosed);
    assert_eq!(entries.len(), 100_000);
    assert!(entries.iter().all(|e| e.name == "x" && !e.dir));
    assert!(
        scanned <= 8 * unclosed.len(),
        "{scanned} bytes scanned for a page of {}",
        unclosed.len()
    );
    let no_gt = format!("{}>", "<a ".repeat(300_000));
    let (entries, scanned) = parse_autoindex_counted(&no_gt);
    assert!(entries.is_empty());
    assert!(
        scanned <= 8 * no_gt.len(),
        "{scanned} bytes for {}",
        no_gt.len()
    );
    let mixed = "<a href=\"f\">f</a> 1M\n<a href=y>".repeat(20_000);
    let (entries, scanned) = parse_autoindex_counted(&mixed);
    assert_eq!(entries.len(), 40_000);
    assert!(
        scanned <= 8 * mixed.len(),
        "{scanned} bytes for {}",
        mixed.len()
    );
}
