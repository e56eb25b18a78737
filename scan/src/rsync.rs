//! rsync listings: runs the `rsync` program in listing mode against an `rsync://` URL (with
//! connect and I/O timeouts, a clean environment, `TZ=UTC`) and parses its output as it
//! streams, bounded in time, entries and line length.
//!
//! A listing line is `<mode> <size> <YYYY/MM/DD> <HH:MM:SS> <name>`; sizes may carry `,` or
//! `.` thousands separators; names keep their spaces and have non-printable bytes escaped as
//! `\#ooo`. Only regular files are kept: directories, symlinks, devices and special files
//! are skipped; anything else is garbage and ends the scan.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

use super::{Limits, ListedFile, Listing, ScanError, excerpt, safe_relative_path, time};

/// What one listing line holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A regular file.
    File(ListedFile),
    /// A directory, symlink, device, socket or FIFO: not indexed.
    Skipped,
}

/// Parses one line of `rsync --list-only` output.
pub fn parse_line(line: &str) -> Option<Line> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let (mode, rest) = split_field(line)?;
    if mode.len() != 10 || !mode.bytes().skip(1).all(|b| b"rwxsStT-+.@".contains(&b)) {
        return None;
    }
    let (size, rest) = split_field(rest)?;
    let (date, rest) = split_field(rest)?;
    let (clock, name) = split_field(rest)?;
    let size: u64 =
        size.bytes()
            .filter(|b| *b != b',' && *b != b'.')
            .try_fold(0u64, |acc, b| {
                b.is_ascii_digit()
                    .then(|| acc.checked_mul(10)?.checked_add(u64::from(b - b'0')))
                    .flatten()
            })?;
    let mtime = parse_datetime(date, clock)?;
    if name.is_empty() {
        return None;
    }
    match mode.as_bytes()[0] {
        b'-' => {
            let path = unescape(name)?;
            if path == "." {
                return Some(Line::Skipped);
            }
            safe_relative_path(&path).then_some(Line::File(ListedFile {
                path,
                size,
                mtime: Some(mtime),
            }))
        }
        b'd' | b'l' | b'c' | b'b' | b'p' | b's' => Some(Line::Skipped),
        _ => None,
    }
}

/// Splits off the first whitespace-delimited field; the rest starts after one run of spaces.
fn split_field(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start_matches(' ');
    let end = s.find(' ')?;
    let rest = &s[end..];
    Some((&s[..end], rest.trim_start_matches(' ')))
}

fn parse_datetime(date: &str, clock: &str) -> Option<i64> {
    let d: Vec<&str> = date.split('/').collect();
    let t: Vec<&str> = clock.split(':').collect();
    if d.len() != 3 || t.len() != 3 {
        return None;
    }
    time::unix(
        d[0].parse().ok()?,
        d[1].parse().ok()?,
        d[2].parse().ok()?,
        t[0].parse().ok()?,
        t[1].parse().ok()?,
        t[2].parse().ok()?,
    )
}

/// Decodes rsync's `\#ooo` escapes of non-printable bytes.
fn unescape(name: &str) -> Option<String> {
    if !name.contains("\\#") {
        return Some(name.to_owned());
    }
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'#') && i + 5 <= bytes.len() {
            let oct = std::str::from_utf8(&bytes[i + 2..i + 5]).ok()?;
            out.push(u8::from_str_radix(oct, 8).ok()?);
            i += 5;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses a whole listing held in memory (used by benchmarks and tests).
pub fn parse_listing(text: &str, limits: &Limits) -> Result<Listing, ScanError> {
    let mut listing = Listing {
        files: Vec::new(),
        mtime_precision: 1,
        exact_sizes: true,
    };
    for (n, line) in text.lines().enumerate() {
        push_line(&mut listing, n + 1, line, limits)?;
    }
    Ok(listing)
}

fn push_line(
    listing: &mut Listing,
    n: usize,
    line: &str,
    limits: &Limits,
) -> Result<(), ScanError> {
    if line.len() > limits.max_line {
        return Err(ScanError::LineTooLong {
            line: n,
            limit: limits.max_line,
        });
    }
    if line.trim().is_empty() {
        return Ok(());
    }
    match parse_line(line) {
        Some(Line::File(f)) => {
            if listing.files.len() >= limits.max_entries {
                return Err(ScanError::Limit {
                    what: "entries",
                    limit: limits.max_entries,
                });
            }
            listing.files.push(f);
            Ok(())
        }
        Some(Line::Skipped) => Ok(()),
        None => Err(ScanError::Garbage {
            line: n,
            excerpt: excerpt(line),
        }),
    }
}

/// Lists `url` (an `rsync://` URL of a directory) recursively with the `rsync` program.
pub async fn list(url: &str, limits: &Limits) -> Result<Listing, ScanError> {
    list_with(url, true, limits).await
}

/// Lists only the files directly in `url`'s directory (a reachability check: the module
/// exists and answers, without walking a whole tree).
pub async fn list_root(url: &str, limits: &Limits) -> Result<Listing, ScanError> {
    list_with(url, false, limits).await
}

async fn list_with(url: &str, recursive: bool, limits: &Limits) -> Result<Listing, ScanError> {
    if !url.starts_with("rsync://") {
        return Err(ScanError::BadUrl {
            url: url.into(),
            why: "not an rsync:// URL".into(),
        });
    }
    let url = if url.ends_with('/') {
        url.to_owned()
    } else {
        format!("{url}/")
    };
    let io_secs = limits.io_timeout.as_secs().max(1);
    let mut child = Command::new("rsync")
        .args(["--list-only", "--no-motd", "--exclude=.~tmp~/"])
        .args(recursive.then_some("--recursive"))
        .arg(format!("--timeout={io_secs}"))
        .arg(format!("--contimeout={io_secs}"))
        .arg("--")
        .arg(&url)
        .env_clear()
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ScanError::Spawn {
            program: "rsync",
            source,
        })?;
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(ScanError::Spawn {
            program: "rsync",
            source: std::io::Error::other("no pipes"),
        });
    };
    let stderr_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut buf).await;
        String::from_utf8_lossy(&buf).into_owned()
    });
    let read = async {
        let mut reader = BufReader::new(stdout);
        let mut listing = Listing {
            files: Vec::new(),
            mtime_precision: 1,
            exact_sizes: true,
        };
        let mut buf = Vec::with_capacity(256);
        let mut n = 0;
        loop {
            buf.clear();
            let got =
                read_line_bounded(&mut reader, &mut buf, limits.max_line, limits.io_timeout).await;
            n += 1;
            match got {
                Ok(0) => return Ok(listing),
                Ok(_) => {}
                Err(LineError::TooLong) => {
                    return Err(ScanError::LineTooLong {
                        line: n,
                        limit: limits.max_line,
                    });
                }
                Err(LineError::Stalled) => return Err(ScanError::Stalled(limits.io_timeout)),
                Err(LineError::Io(e)) => {
                    return Err(ScanError::Io {
                        what: "reading rsync output of",
                        path: url.clone(),
                        source: e,
                    });
                }
            }
            let line = String::from_utf8_lossy(&buf);
            push_line(&mut listing, n, line.trim_end_matches('\n'), limits)?;
        }
    };
    let listing = match tokio::time::timeout(limits.deadline, read).await {
        Err(_) => return Err(ScanError::Deadline(limits.deadline)),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(listing)) => listing,
    };
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .map_err(|_| ScanError::Stalled(Duration::from_secs(10)))?
        .map_err(|source| ScanError::Spawn {
            program: "rsync",
            source,
        })?;
    let stderr = stderr_task.await.unwrap_or_default();
    match status.code() {
        // 23: some files could not be transferred (e.g. unreadable); 24: files vanished
        // during the listing. The listing is still usable.
        Some(0 | 23 | 24) => Ok(listing),
        code => Err(ScanError::Exit {
            program: "rsync",
            code: code.unwrap_or(-1),
            stderr: excerpt(stderr.trim()),
        }),
    }
}

/// Why a bounded line read stopped.
#[derive(Debug)]
pub(crate) enum LineError {
    TooLong,
    Stalled,
    Io(std::io::Error),
}

/// Reads one line (with its `\n`) into `buf`, refusing lines over `max` bytes and giving up
/// when nothing arrives for `idle`. Returns 0 at end of input.
pub(crate) async fn read_line_bounded<R: AsyncBufReadExt + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
    idle: Duration,
) -> Result<usize, LineError> {
    loop {
        let available = match tokio::time::timeout(idle, reader.fill_buf()).await {
            Err(_) => return Err(LineError::Stalled),
            Ok(Err(e)) => return Err(LineError::Io(e)),
            Ok(Ok(b)) => b,
        };
        if available.is_empty() {
            return Ok(buf.len());
        }
        let (take, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if buf.len() + take > max + 1 {
            return Err(LineError::TooLong);
        }
        buf.extend_from_slice(&available[..take]);
        reader.consume(take);
        if done {
            return Ok(buf.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64, mtime: i64) -> Option<Line> {
        Some(Line::File(ListedFile {
            path: path.into(),
            size,
            mtime: Some(mtime),
        }))
    }

    #[test]
    fn lines_of_every_kind() {
        let t = 1_795_309_323;
        assert_eq!(
            parse_line("-rw-r--r--             12 2026/11/22 01:02:03 dists/stable/Release"),
            file("dists/stable/Release", 12, t)
        );
        assert_eq!(
            parse_line("-rw-r--r--  1,234,567,890 2026/11/22 01:02:03 pool/a b  c.deb"),
            file("pool/a b  c.deb", 1_234_567_890, t)
        );
        assert_eq!(
            parse_line("-rw-r--r--      1.234.567 2026/11/22 01:02:03 dots"),
            file("dots", 1_234_567, t)
        );
        assert_eq!(
            parse_line("-rw-r--r--              1 2026/11/22 01:02:03 ünïcødé/日本.iso"),
            file("ünïcødé/日本.iso", 1, t)
        );
        assert_eq!(
            parse_line("-rw-r--r--              1 2026/11/22 01:02:03 tab\\#011name"),
            file("tab\tname", 1, t)
        );
        assert_eq!(
            parse_line("drwxr-xr-x          4,096 2026/11/22 01:02:03 dists"),
            Some(Line::Skipped)
        );
        assert_eq!(
            parse_line("lrwxrwxrwx             11 2026/11/22 01:02:03 latest -> 1.2.3"),
            Some(Line::Skipped)
        );
        assert_eq!(
            parse_line("crw-rw-rw-              0 2026/11/22 01:02:03 dev/null"),
            Some(Line::Skipped)
        );
        assert_eq!(
            parse_line("prw-r--r--              0 2026/11/22 01:02:03 fifo"),
            Some(Line::Skipped)
        );
        assert_eq!(
            parse_line("-rw-r--r--              9 2026/11/22 01:02:03 ."),
            Some(Line::Skipped)
        );
    }

    #[test]
    fn hostile_lines_are_rejected() {
        for bad in [
            "<html><body>Not rsync</body></html>",
            "-rw-r--r--  12 2026/13/22 01:02:03 bad-month",
            "-rw-r--r--  12x 2026/11/22 01:02:03 bad-size",
            "-rw-r--r--  99999999999999999999999 2026/11/22 01:02:03 overflow",
            "-rw-r--r--  12 2026/11/22 01:02:03 ../escape",
            "-rw-r--r--  12 2026/11/22 01:02:03 /absolute",
            "-rw-r--r--  12 2026/11/22 01:02:03 a//b",
            "-rw-r--r--  12 2026/11/22",
            "@ERROR: Unknown module 'x'",
            // Found by fuzzing: an absurd year overflowed the day count.
            "-rw-r--r-- 1 2000000000000/1/2 1:2:3 x",
        ] {
            assert_eq!(parse_line(bad), None, "{bad}");
        }
        let limits = Limits {
            max_entries: 1,
            max_line: 100,
            ..Limits::default()
        };
        let two = "-rw-r--r--  1 2026/11/22 01:02:03 a\n-rw-r--r--  1 2026/11/22 01:02:03 b\n";
        assert!(matches!(
            parse_listing(two, &limits),
            Err(ScanError::Limit {
                what: "entries",
                limit: 1
            })
        ));
        let long = format!("-rw-r--r--  1 2026/11/22 01:02:03 {}\n", "x".repeat(200));
        assert!(matches!(
            parse_listing(&long, &limits),
            Err(ScanError::LineTooLong { line: 1, .. })
        ));
        let garbage = "-rw-r--r--  1 2026/11/22 01:02:03 a\nGARBAGE\n";
        let err = parse_listing(garbage, &Limits::default()).unwrap_err();
        assert_eq!(err.to_string(), "unexpected output at line 2: \"GARBAGE\"");
    }
}
