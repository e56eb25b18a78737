//! URLs of files named in the state: index paths are raw bytes of the tree, and a URL to one
//! needs them percent-encoded. Shared by the redirector (redirects, lists) and the health
//! checker (canary URLs), so both encode a path the same way. Pure, no I/O.

use std::borrow::Cow;
use std::fmt::Write;

fn path_byte_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&b)
}

/// Percent-encodes a relative path: every byte but the unreserved and sub-delimiter
/// characters, `:`, `@` and the `/` between segments (borrowed when nothing needs it).
pub fn encode_path(path: &str) -> Cow<'_, str> {
    if path.bytes().all(path_byte_ok) {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len() + 8);
    for b in path.bytes() {
        if path_byte_ok(b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_a_path_cannot_hold_is_encoded() {
        assert!(matches!(
            encode_path("pool/a-1.0_b~c.deb"),
            Cow::Borrowed(_)
        ));
        assert_eq!(encode_path("pool/a b.deb"), "pool/a%20b.deb");
        assert_eq!(encode_path("x?y#z%"), "x%3Fy%23z%25");
        assert_eq!(encode_path("ü"), "%C3%BC", "bytes, not characters");
        assert_eq!(encode_path("a:b@c/d+e"), "a:b@c/d+e");
    }
}
