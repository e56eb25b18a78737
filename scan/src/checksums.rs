//! Checksum files published by projects (`SHA256SUMS`, `*-CHECKSUM`): the GNU coreutils
//! format `<hex>  <name>` (a `*` before the name marks binary mode) and the BSD format
//! `SHA256 (<name>) = <hex>`. Names are relative to the checksum file's directory.

use std::collections::HashMap;

/// Parses a checksum file; `digest_len` is the digest length in bytes. Lines that are not
/// checksums (comments, PGP armour) are skipped; names that are not safe relative paths too.
pub fn parse(text: &str, digest_len: usize) -> HashMap<String, Vec<u8>> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        let parsed = if let Some(rest) = line
            .split_once(" (")
            .filter(|(algo, _)| algo.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            rest.1
                .rsplit_once(") = ")
                .map(|(name, hex)| (hex.trim(), name))
        } else {
            line.split_once(' ')
                .map(|(hex, name)| (hex, name.trim_start_matches(' ').trim_start_matches('*')))
        };
        let Some((hex, name)) = parsed else { continue };
        if hex.len() != digest_len * 2 || !super::safe_relative_path(name) {
            continue;
        }
        if let Some(digest) = decode_hex(hex) {
            out.insert(name.to_owned(), digest);
        }
    }
    out
}

/// Decodes lower- or upper-case hex.
pub fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gnu_and_bsd_formats() {
        let a = "ab".repeat(32);
        let text = format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\n# comment\n{a}  debian-13.iso\n{a} *netinst.iso\nSHA256 (Fedora-41.iso) = {a}\n{a}  ../escape.iso\nshort  x.iso\n"
        );
        let sums = parse(&text, 32);
        assert_eq!(sums.len(), 3);
        assert_eq!(sums["debian-13.iso"], vec![0xab; 32]);
        assert!(sums.contains_key("netinst.iso") && sums.contains_key("Fedora-41.iso"));
    }
}
