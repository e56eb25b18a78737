//! FTP listings with suppaftp (async): anonymous login unless the URL carries credentials,
//! `MLSD` where the server offers it (exact sizes, second-precision times), `LIST` otherwise
//! with the common Unix and Windows formats. One listing per directory, never one command per
//! file; every data transfer is read line by line under the scan's limits.

use std::collections::VecDeque;
use std::time::{Duration, Instant, UNIX_EPOCH};

use suppaftp::Status;
use suppaftp::list::ListParser;
use suppaftp::tokio::AsyncFtpStream;
use tokio::io::BufReader;

use super::rsync::{LineError, read_line_bounded};
use super::{Limits, ListedFile, Listing, ScanError, excerpt, safe_relative_path};

fn ftp_err(what: impl Into<String>, e: impl std::fmt::Display) -> ScanError {
    ScanError::Ftp {
        what: what.into(),
        why: e.to_string(),
    }
}

/// Lists `url` (an `ftp://host[:port]/path/` URL) recursively.
pub async fn list(url: &str, limits: &Limits) -> Result<Listing, ScanError> {
    list_with(url, true, limits).await
}

/// Lists only the files directly in `url`'s directory (one listing command: a reachability
/// check that does not walk the tree).
pub async fn list_root(url: &str, limits: &Limits) -> Result<Listing, ScanError> {
    list_with(url, false, limits).await
}

async fn list_with(url: &str, recursive: bool, limits: &Limits) -> Result<Listing, ScanError> {
    let parsed = url::Url::parse(url).map_err(|e| ScanError::BadUrl {
        url: url.into(),
        why: e.to_string(),
    })?;
    if parsed.scheme() != "ftp" {
        return Err(ScanError::BadUrl {
            url: url.into(),
            why: "not an ftp:// URL".into(),
        });
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| ScanError::BadUrl {
            url: url.into(),
            why: "no host".into(),
        })?
        .to_owned();
    let port = parsed.port().unwrap_or(21);
    let user = if parsed.username().is_empty() {
        "anonymous".to_owned()
    } else {
        parsed.username().to_owned()
    };
    let password = parsed.password().unwrap_or("anonymous@").to_owned();
    let root =
        super::http::percent_decode(parsed.path()).unwrap_or_else(|| parsed.path().to_owned());
    tokio::time::timeout(
        limits.deadline,
        walk(&host, port, &user, &password, &root, recursive, limits),
    )
    .await
    .map_err(|_| ScanError::Deadline(limits.deadline))?
}

async fn walk(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    root: &str,
    recursive: bool,
    limits: &Limits,
) -> Result<Listing, ScanError> {
    let io = limits.io_timeout;
    let addr = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| ftp_err("resolving the host", e))?
        .next()
        .ok_or_else(|| ftp_err("resolving the host", "no address"))?;
    let mut ftp = timed(io, "connect", AsyncFtpStream::connect_timeout(addr, io)).await?;
    timed(io, "login", ftp.login(user, password)).await?;
    let mlsd = match tokio::time::timeout(io, ftp.feat()).await {
        Ok(Ok(features)) => features.contains_key("MLST") || features.contains_key("MLSD"),
        _ => false,
    };
    let mut listing = Listing {
        files: Vec::new(),
        mtime_precision: if mlsd { 1 } else { 60 },
        exact_sizes: true,
    };
    let root = if root.ends_with('/') {
        root.to_owned()
    } else {
        format!("{root}/")
    };
    let mut queue = VecDeque::from([(String::new(), 0usize)]);
    let mut requests = 0;
    let started = Instant::now();
    while let Some((dir, depth)) = queue.pop_front() {
        requests += 1;
        if requests > limits.max_requests {
            return Err(ScanError::Limit {
                what: "requests",
                limit: limits.max_requests,
            });
        }
        let remote = format!("{root}{dir}");
        let command = if mlsd {
            format!("MLSD {remote}")
        } else {
            format!("LIST -a {remote}")
        };
        let lines = read_listing(&mut ftp, &command, limits).await?;
        for (n, line) in lines.iter().enumerate() {
            let garbage = || ScanError::Garbage {
                line: n + 1,
                excerpt: excerpt(line),
            };
            let (name, entry) = match parse_line(line, mlsd).ok_or_else(garbage)? {
                FtpLine::Skip => continue,
                FtpLine::Dir(name) => (name, None),
                FtpLine::File { name, size, mtime } => (name, Some((size, mtime))),
            };
            let path = format!("{dir}{name}");
            if !safe_relative_path(&path) {
                return Err(garbage());
            }
            match entry {
                None if !recursive => {}
                None => {
                    if depth + 1 > limits.max_depth {
                        return Err(ScanError::Limit {
                            what: "directory levels",
                            limit: limits.max_depth,
                        });
                    }
                    queue.push_back((format!("{path}/"), depth + 1));
                }
                Some((size, mtime)) => {
                    if listing.files.len() >= limits.max_entries {
                        return Err(ScanError::Limit {
                            what: "entries",
                            limit: limits.max_entries,
                        });
                    }
                    listing.files.push(ListedFile { path, size, mtime });
                }
            }
        }
        if started.elapsed() > limits.deadline {
            return Err(ScanError::Deadline(limits.deadline));
        }
    }
    let _ = tokio::time::timeout(io, ftp.quit()).await;
    Ok(listing)
}

/// One line of an FTP directory listing, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FtpLine {
    /// Nothing to list: `.`, `..`, MLSD's current and parent directories, links, devices.
    Skip,
    /// A directory, by name.
    Dir(String),
    /// A file: name, size and modification time (Unix seconds) when the server gives one.
    File {
        /// Its name.
        name: String,
        /// Its size in bytes.
        size: u64,
        /// Its mtime.
        mtime: Option<i64>,
    },
}

/// Parses one line of an `MLSD` (when `mlsd`) or `LIST` answer; `None` when the line is not
/// a listing line at all. Pure: the FTP walk and the fuzzer call it.
pub fn parse_line(line: &str, mlsd: bool) -> Option<FtpLine> {
    // MLSD lines are `fact=value;…; name`, and a file's facts include its type.
    if mlsd
        && !line
            .split_once("; ")
            .is_some_and(|(facts, _)| facts.to_ascii_lowercase().contains("type="))
    {
        return None;
    }
    let file = if mlsd {
        ListParser::parse_mlsd(line)
    } else {
        ListParser::parse_posix(line).or_else(|_| ListParser::parse_dos(line))
    };
    let Ok(file) = file else {
        // MLSD may announce the current and parent directories with type=cdir/pdir.
        return (mlsd && (line.contains("type=cdir") || line.contains("type=pdir")))
            .then_some(FtpLine::Skip);
    };
    let name = file.name();
    if name == "." || name == ".." {
        return Some(FtpLine::Skip);
    }
    if file.is_directory() {
        Some(FtpLine::Dir(name.to_owned()))
    } else if file.is_file() {
        let mtime = file
            .modified()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_secs()).ok())
            .filter(|t| *t > 0);
        Some(FtpLine::File {
            name: name.to_owned(),
            size: file.size() as u64,
            mtime,
        })
    } else {
        Some(FtpLine::Skip)
    }
}

async fn timed<T>(
    io: Duration,
    what: &str,
    f: impl Future<Output = suppaftp::FtpResult<T>>,
) -> Result<T, ScanError> {
    match tokio::time::timeout(io, f).await {
        Err(_) => Err(ScanError::Stalled(io)),
        Ok(Err(e)) => Err(ftp_err(what, e)),
        Ok(Ok(v)) => Ok(v),
    }
}

/// Runs a listing command and reads its data connection line by line, within the limits.
async fn read_listing(
    ftp: &mut AsyncFtpStream,
    command: &str,
    limits: &Limits,
) -> Result<Vec<String>, ScanError> {
    let io = limits.io_timeout;
    let (_, stream) = timed(
        io,
        command,
        ftp.custom_data_command(command, &[Status::AboutToSend, Status::AlreadyOpen]),
    )
    .await?;
    let mut reader = BufReader::new(stream);
    let mut lines = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match read_line_bounded(&mut reader, &mut buf, limits.max_line, io).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(LineError::TooLong) => {
                return Err(ScanError::LineTooLong {
                    line: lines.len() + 1,
                    limit: limits.max_line,
                });
            }
            Err(LineError::Stalled) => return Err(ScanError::Stalled(io)),
            Err(LineError::Io(e)) => return Err(ftp_err(command, e)),
        }
        let line = String::from_utf8_lossy(&buf)
            .trim_end_matches(['\r', '\n'])
            .to_owned();
        if !line.is_empty() {
            if lines.len() >= limits.max_entries {
                return Err(ScanError::Limit {
                    what: "entries",
                    limit: limits.max_entries,
                });
            }
            lines.push(line);
        }
    }
    let stream = reader.into_inner();
    timed(io, command, stream.finish()).await?;
    Ok(lines)
}
