//! Path cleaning and the classification table: one row per kind of request, naming its rule.

use super::*;

#[test]
fn the_fast_path_agrees_with_the_full_cleaning() {
    for raw in [
        "/",
        "//",
        "/a",
        "/a/",
        "/a//",
        "//a",
        "/a/./b",
        "/a/../b",
        "/.",
        "/..",
        "/a/.",
        "/a/..",
        "/.a/..b/...",
        "/a%2fb",
        "/a\u{1}b",
        "/a/b.deb",
        "a/b",
        "",
        "/ü",
        "/a\u{85}",
        "/dists/stable/",
        "/a b",
    ] {
        let Ok(clean) = clean_path(raw) else {
            assert!(
                !is_clean(raw),
                "{raw:?} is refused yet passes the fast check"
            );
            continue;
        };
        if is_clean(raw) {
            assert_eq!(clean, raw, "{raw:?}");
        }
        if clean.is_ascii() && !clean.contains('%') {
            assert!(
                is_clean(&clean),
                "{raw:?} cleans to {clean:?}, which the fast check does not accept"
            );
        }
    }
}

#[test]
fn paths_are_cleaned_or_refused() {
    assert_eq!(
        clean_path("/debian//pool/./x").unwrap_err(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        clean_path("/debian//pool///x.deb").unwrap(),
        "/debian/pool/x.deb"
    );
    assert_eq!(
        clean_path("/debian/pool/a%20b%C3%BC.deb").unwrap(),
        "/debian/pool/a bü.deb"
    );
    assert_eq!(
        clean_path("/debian/%2e%2e/etc/passwd").unwrap_err(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        clean_path("/debian/x%00y").unwrap_err(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        clean_path("/debian/%zz").unwrap_err(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        clean_path("/debian/%ff").unwrap_err(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        clean_path(&format!("/{}", "a".repeat(5000))).unwrap_err(),
        StatusCode::URI_TOO_LONG
    );
    assert_eq!(clean_path("/debian/dists/").unwrap(), "/debian/dists/");
}
