//! HTTP scanning: crawls autoindex pages (nginx, Apache, lighttpd styles) under a mirror's
//! base URL, with a concurrency limit, a request budget, a page size limit and a deadline;
//! and fetches trace files. Parsing a page is a pure function, [`parse_autoindex`].

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::{Limits, ListedFile, Listing, ScanError, excerpt, safe_relative_path, time};

/// Largest autoindex page read.
const MAX_PAGE: usize = 8 * 1024 * 1024;
/// Largest trace file read.
const MAX_TRACE: usize = 64 * 1024;
/// Longest `<a …>` tag looked into; longer ones are not links of an autoindex page.
const MAX_TAG: usize = 8 * 1024;

/// A size as an autoindex page shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Size {
    /// Exact bytes (nginx's default).
    Exact(u64),
    /// Rounded, e.g. `1.2M`: the value and the unit in bytes.
    Approx(f64, u64),
}

impl Size {
    /// Whether `bytes` is consistent with this size.
    pub fn matches(self, bytes: u64) -> bool {
        match self {
            Size::Exact(n) => n == bytes,
            Size::Approx(v, unit) => {
                // Autoindex modules show one decimal below 10 (`1.2M`) and whole numbers
                // above, rounding either way: allow for that rounding, not more.
                let shown = bytes as f64 / unit as f64;
                let slack = if v < 10.0 && v.fract() != 0.0 {
                    0.1
                } else {
                    1.0
                };
                (shown - v).abs() <= slack
            }
        }
    }
}

/// One link of an autoindex page.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The name (percent-decoded), without a trailing `/`.
    pub name: String,
    /// Whether it is a directory.
    pub dir: bool,
    /// Its size, if shown.
    pub size: Option<Size>,
    /// Its mtime (Unix seconds, minute precision), if shown.
    pub mtime: Option<i64>,
}

/// The first occurrence of a needle at or after a position, remembered: queries at positions
/// that only move forward scan the text once in all, so a page is parsed in linear time
/// however its tags are (un)closed.
struct Next<'a> {
    text: &'a str,
    needle: &'static str,
    /// The first occurrence at or after `from` is `hit` (nothing searched yet: `from` is MAX).
    from: usize,
    hit: Option<usize>,
    /// Bytes looked at so far (what the linear bound is about).
    scanned: usize,
}

impl<'a> Next<'a> {
    fn new(text: &'a str, needle: &'static str) -> Self {
        Next {
            text,
            needle,
            from: usize::MAX,
            hit: None,
            scanned: 0,
        }
    }

    fn at_or_after(&mut self, pos: usize) -> Option<usize> {
        let known = self.from <= pos && self.hit.is_none_or(|h| h >= pos);
        if !known {
            self.from = pos;
            self.hit = self
                .text
                .get(pos..)
                .and_then(|s| s.find(self.needle))
                .map(|i| pos + i);
            let end = self.hit.map_or(self.text.len(), |h| h + self.needle.len());
            self.scanned += end.saturating_sub(pos);
        }
        self.hit
    }
}

/// Parses an autoindex page into its entries. Links that leave the directory (parent, absolute,
/// other hosts, queries for sorting) are ignored. Linear in the page's length.
pub fn parse_autoindex(html: &str) -> Vec<Entry> {
    parse_autoindex_counted(html).0
}

/// [`parse_autoindex`], and how many bytes its searches looked at (for the linear bound's test).
fn parse_autoindex_counted(html: &str) -> (Vec<Entry>, usize) {
    let mut entries = Vec::new();
    let lower = html.to_ascii_lowercase();
    let (mut links, mut next_links) = (Next::new(&lower, "<a "), Next::new(&lower, "<a "));
    let mut tag_ends = Next::new(&lower, ">");
    let mut closes = Next::new(&lower, "</a>");
    let mut pos = 0;
    while let Some(start) = links.at_or_after(pos) {
        let Some(tag_end) = tag_ends.at_or_after(start) else {
            break;
        };
        if tag_end - start > MAX_TAG {
            pos = start + 3;
            continue;
        }
        pos = tag_end + 1;
        let Some(href) = attribute(&html[start..tag_end], "href") else {
            continue;
        };
        let href = decode_entities(&href);
        if href.is_empty()
            || href.starts_with(['?', '#', '/'])
            || href.contains("://")
            || href.starts_with("..")
            || href.starts_with("./")
        {
            continue;
        }
        let dir = href.ends_with('/');
        let Some(name) = percent_decode(href.trim_end_matches('/')) else {
            continue;
        };
        if name.contains('/') || !safe_relative_path(&name) {
            continue;
        }
        let close = closes.at_or_after(pos).map_or(pos, |i| i + 4);
        let next = next_links.at_or_after(close).unwrap_or(html.len());
        let line_end = html[close..next].find('\n').map_or(next, |i| close + i);
        let tail = strip_tags(&html[close..line_end.max(close)]);
        let tokens: Vec<&str> = tail.split_whitespace().collect();
        let size = if dir {
            None
        } else {
            tokens.iter().rev().find_map(|t| parse_size(t))
        };
        entries.push(Entry {
            name,
            dir,
            size,
            mtime: parse_date(&tokens),
        });
    }
    let scanned = links.scanned + next_links.scanned + tag_ends.scanned + closes.scanned;
    (entries, scanned)
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let i = lower.find(&format!("{name}="))? + name.len() + 1;
    let rest = &tag[i..];
    let (quote, rest) = match rest.chars().next()? {
        q @ ('"' | '\'') => (q, &rest[1..]),
        _ => (' ', rest),
    };
    let end = rest.find(quote).unwrap_or(rest.len());
    Some(rest[..end].to_owned())
}

fn decode_entities(s: &str) -> String {
    s.replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
}

/// Percent-decodes a URL path segment; `None` when the result is not UTF-8 or malformed.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `base` (ending with `/`) followed by the relative `path`, each segment percent-encoded.
pub fn join_url(base: &str, path: &str) -> String {
    format!(
        "{base}{}",
        path.split('/')
            .map(percent_encode)
            .collect::<Vec<_>>()
            .join("/")
    )
}

/// Percent-encodes a path segment for a URL.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn strip_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&nbsp;", " ")
}

fn parse_size(t: &str) -> Option<Size> {
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().ok().map(Size::Exact);
    }
    let t = t.trim_end_matches('B').trim_end_matches('i');
    // The unit is the last character, whatever its width (pages hold any text).
    let mut chars = t.chars();
    let unit = match chars.next_back()? {
        'K' | 'k' => 1u64 << 10,
        'M' => 1 << 20,
        'G' => 1 << 30,
        'T' => 1 << 40,
        _ => return None,
    };
    let num = chars.as_str();
    let v: f64 = num.parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(Size::Approx(v, unit))
}

/// Finds a date and time among the tokens after a link, in the styles autoindex modules use:
/// `22-Nov-2026 01:02` (nginx), `2026-11-22 01:02` (Apache), `2026-Nov-22 01:02:03` (lighttpd).
fn parse_date(tokens: &[&str]) -> Option<i64> {
    tokens.windows(2).find_map(|w| {
        let d: Vec<&str> = w[0].split('-').collect();
        let t: Vec<u32> = w[1]
            .split(':')
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        if d.len() != 3 || t.len() < 2 {
            return None;
        }
        let (y, m, day) = if d[0].len() == 4 {
            let m = d[1]
                .parse()
                .ok()
                .or_else(|| time::month_from_abbrev(d[1]))?;
            (d[0].parse().ok()?, m, d[2].parse().ok()?)
        } else {
            (
                d[2].parse().ok()?,
                time::month_from_abbrev(d[1])?,
                d[0].parse().ok()?,
            )
        };
        time::unix(y, m, day, t[0], t[1], t.get(2).copied().unwrap_or(0))
    })
}

/// Builds the HTTP client used by scans and health checks (rustls with the ring provider,
/// the only crypto provider in the binary).
pub fn client(timeout: Duration) -> Result<reqwest::Client, ScanError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("mirrorfleet-scan/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(timeout)
        .read_timeout(timeout)
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .map_err(|e| ScanError::Http {
            url: String::new(),
            why: format!("cannot build an HTTP client: {e}"),
        })
}

/// GETs `url`, reading at most `max` bytes of body.
async fn get(
    client: &reqwest::Client,
    url: &str,
    max: usize,
    timeout: Duration,
) -> Result<String, ScanError> {
    let fail = |why: String| ScanError::Http {
        url: url.to_owned(),
        why,
    };
    let mut resp = client
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| fail(describe(&e)))?;
    if !resp.status().is_success() {
        return Err(fail(format!("HTTP status {}", resp.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| fail(describe(&e)))? {
        if body.len() + chunk.len() > max {
            return Err(fail(format!("the page is larger than {max} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| fail("the page is not UTF-8".into()))
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        format!("cannot connect: {}", mirrorfleet_runtime::error_chain(e))
    } else {
        mirrorfleet_runtime::error_chain(e)
    }
}

/// Crawls the autoindex pages under `base` (an `http(s)://…/` URL).
pub async fn crawl(
    client: &reqwest::Client,
    base: &str,
    limits: &Limits,
) -> Result<Listing, ScanError> {
    if !(base.starts_with("http://") || base.starts_with("https://")) || !base.ends_with('/') {
        return Err(ScanError::BadUrl {
            url: base.into(),
            why: "not an http(s):// URL ending with /".into(),
        });
    }
    let started = Instant::now();
    let mut listing = Listing {
        files: Vec::new(),
        mtime_precision: 60,
        exact_sizes: true,
    };
    let mut queue: VecDeque<(String, usize)> = VecDeque::from([(String::new(), 0)]);
    let mut seen: HashSet<String> = HashSet::new();
    let mut requests = 0usize;
    let mut in_flight = FuturesUnordered::new();
    loop {
        while in_flight.len() < limits.concurrency.max(1) {
            let Some((dir, depth)) = queue.pop_front() else {
                break;
            };
            requests += 1;
            if requests > limits.max_requests {
                return Err(ScanError::Limit {
                    what: "requests",
                    limit: limits.max_requests,
                });
            }
            let url = format!(
                "{base}{}",
                dir.split('/')
                    .filter(|s| !s.is_empty())
                    .map(|s| percent_encode(s) + "/")
                    .collect::<String>()
            );
            in_flight.push(async move {
                (
                    dir,
                    depth,
                    get(client, &url, MAX_PAGE, limits.io_timeout).await,
                )
            });
        }
        let remaining = limits.deadline.saturating_sub(started.elapsed());
        let next = match tokio::time::timeout(remaining, in_flight.next()).await {
            Err(_) => return Err(ScanError::Deadline(limits.deadline)),
            Ok(None) => return Ok(listing),
            Ok(Some(next)) => next,
        };
        let (dir, depth, page) = next;
        let page = page?;
        let entries = parse_autoindex(&page);
        if entries.is_empty()
            && !page.to_ascii_lowercase().contains("<a ")
            && !page.trim().is_empty()
        {
            return Err(ScanError::Garbage {
                line: 1,
                excerpt: excerpt(page.trim()),
            });
        }
        for e in entries {
            let path = format!("{dir}{}", e.name);
            if e.dir {
                if depth + 1 > limits.max_depth {
                    return Err(ScanError::Limit {
                        what: "directory levels",
                        limit: limits.max_depth,
                    });
                }
                if seen.insert(path.clone()) {
                    queue.push_back((format!("{path}/"), depth + 1));
                }
                continue;
            }
            if listing.files.len() >= limits.max_entries {
                return Err(ScanError::Limit {
                    what: "entries",
                    limit: limits.max_entries,
                });
            }
            let (size, exact) = match e.size {
                Some(Size::Exact(n)) => (n, true),
                Some(Size::Approx(v, unit)) => ((v * unit as f64) as u64, false),
                None => (0, false),
            };
            listing.exact_sizes &= exact;
            listing.files.push(ListedFile {
                path,
                size,
                mtime: e.mtime,
            });
        }
    }
}

/// Fetches a trace file over HTTP(S) and parses it.
pub async fn fetch_trace(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<Option<i64>, ScanError> {
    let text = get(client, url, MAX_TRACE, timeout).await?;
    Ok(super::trace::parse(&text))
}

#[cfg(test)]
mod tests;
