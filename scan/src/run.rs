//! Runs scans end to end: picks the protocols a mirror offers, lists, compares with the
//! source index and writes the new availability — only when the scan succeeded, so a failed
//! scan never replaces the previous good availability. Source scans build and write the index.

use std::path::Path;
use std::time::Duration;

use mirrorfleet_crds::state::index::FileRecord;
use mirrorfleet_crds::state::{
    Availability, FileIndex, MirrorProjectState, MirrorState, PathClasses, ProjectState,
};
use mirrorfleet_store::{StateWriter, Store};

use super::{Limits, Listing, ScanError, compare, ftp, http, rsync, source};

/// The outcome of a mirror scan.
#[derive(Debug)]
pub struct MirrorScan {
    /// The protocol that produced the listing.
    pub protocol: &'static str,
    /// The availability written.
    pub availability: Availability,
    /// The timezone offset found.
    pub tz_offset: i64,
}

/// The protocols to try for `carried`, in order.
pub fn protocols(mirror: &MirrorState, carried: &MirrorProjectState) -> Vec<&'static str> {
    let offered = |p: &str| match p {
        "rsync" => carried.rsync.is_some(),
        "ftp" => carried.ftp.is_some(),
        "http" => carried.https.is_some() || carried.http.is_some(),
        _ => false,
    };
    let wanted: Vec<&str> = if mirror.scan_protocols.is_empty() {
        vec!["rsync", "ftp", "http"]
    } else {
        mirror.scan_protocols.iter().map(String::as_str).collect()
    };
    ["rsync", "ftp", "http"]
        .into_iter()
        .filter(|p| wanted.contains(p) && offered(p))
        .collect()
}

/// Lists a mirror's copy of a project with one protocol.
pub async fn list(
    protocol: &str,
    carried: &MirrorProjectState,
    client: &reqwest::Client,
    limits: &Limits,
) -> Result<Listing, ScanError> {
    match protocol {
        "rsync" => rsync::list(carried.rsync.as_deref().unwrap_or_default(), limits).await,
        "ftp" => ftp::list(carried.ftp.as_deref().unwrap_or_default(), limits).await,
        _ => {
            http::crawl(
                client,
                carried
                    .https
                    .as_deref()
                    .or(carried.http.as_deref())
                    .unwrap_or_default(),
                limits,
            )
            .await
        }
    }
}

/// Scans `mirror`'s copy of `project` against `index` and writes the availability.
pub async fn scan_mirror<S: Store>(
    writer: &StateWriter<S>,
    mirror: &MirrorState,
    project: &ProjectState,
    index: &FileIndex,
    limits: &Limits,
    now: i64,
) -> Result<MirrorScan, ScanError> {
    let fail = |attempts| ScanError::Mirror {
        mirror: mirror.name.clone(),
        project: project.name.clone(),
        attempts,
    };
    let Some(carried) = mirror.projects.iter().find(|p| p.project == project.name) else {
        return Err(fail(vec![(
            "none",
            ScanError::BadUrl {
                url: String::new(),
                why: format!(
                    "mirror {} does not carry project {}",
                    mirror.name, project.name
                ),
            },
        )]));
    };
    let classes = PathClasses::of(project).map_err(|why| {
        fail(vec![(
            "none",
            ScanError::BadUrl {
                url: String::new(),
                why,
            },
        )])
    })?;
    let client = http::client(limits.io_timeout).map_err(|e| fail(vec![("http", e)]))?;
    let mut attempts = Vec::new();
    for protocol in protocols(mirror, carried) {
        match list(protocol, carried, &client, limits).await {
            Ok(listing) => {
                let cmp = compare::compare(index, &listing, &classes, &carried.paths);
                let last_sync = match (
                    &project.trace_file,
                    carried.https.as_ref().or(carried.http.as_ref()),
                ) {
                    (Some(trace), Some(base)) => {
                        let url = http::join_url(base, trace);
                        http::fetch_trace(&client, &url, limits.io_timeout)
                            .await
                            .ok()
                            .flatten()
                    }
                    _ => None,
                }
                // A trace from the future (a wrong clock, a hostile mirror) says at most
                // "synced by now": it must not look newer than this scan for ever.
                .map(|t| t.min(now));
                let availability = Availability {
                    mirror: mirror.name.clone(),
                    project: project.name.clone(),
                    serial: index.serial.clone(),
                    scanned_at: now,
                    last_sync,
                    counts: cmp.counts,
                    present: cmp.present,
                    mutable: cmp.mutable,
                };
                writer
                    .write_availability(&availability)
                    .await
                    .map_err(|e| {
                        fail(vec![(
                            protocol,
                            ScanError::Io {
                                what: "cannot store the availability of",
                                path: mirror.name.clone(),
                                source: std::io::Error::other(mirrorfleet_runtime::error_chain(&e)),
                            },
                        )])
                    })?;
                return Ok(MirrorScan {
                    protocol,
                    availability,
                    tz_offset: cmp.tz_offset,
                });
            }
            Err(e) => {
                tracing::warn!(mirror = %mirror.name, project = %project.name, protocol, error = %mirrorfleet_runtime::error_chain(&e), "scan failed");
                attempts.push((protocol, e));
            }
        }
    }
    if mirror.scan_protocols.iter().any(|p| p == "trace") {
        match trace_only(
            &client, mirror, project, carried, index, &classes, limits, now,
        )
        .await
        {
            Ok(availability) => {
                writer
                    .write_availability(&availability)
                    .await
                    .map_err(|e| {
                        let source = std::io::Error::other(mirrorfleet_runtime::error_chain(&e));
                        fail(vec![(
                            "trace",
                            ScanError::Io {
                                what: "cannot store the availability of",
                                path: mirror.name.clone(),
                                source,
                            },
                        )])
                    })?;
                return Ok(MirrorScan {
                    protocol: "trace",
                    availability,
                    tz_offset: 0,
                });
            }
            Err(e) => attempts.push(("trace", e)),
        }
    }
    if attempts.is_empty() {
        attempts.push((
            "none",
            ScanError::BadUrl {
                url: String::new(),
                why: "no scannable URL (rsync, ftp or http) for this project".into(),
            },
        ));
    }
    Err(fail(attempts))
}

/// Trace-only mode, for mirrors that allow nothing but plain downloads: a mirror whose trace
/// file shows a sync at or after the newest file of the index is taken to hold all of it
/// (within the paths it carries). Anything older, or an unreadable trace, fails the scan.
#[allow(clippy::too_many_arguments)]
async fn trace_only(
    client: &reqwest::Client,
    mirror: &MirrorState,
    project: &ProjectState,
    carried: &MirrorProjectState,
    index: &FileIndex,
    classes: &PathClasses,
    limits: &Limits,
    now: i64,
) -> Result<Availability, ScanError> {
    let bad = |why: &str| ScanError::BadUrl {
        url: mirror.name.clone(),
        why: why.into(),
    };
    let trace = project
        .trace_file
        .as_ref()
        .ok_or_else(|| bad("trace-only scans need the project's traceFile"))?;
    let base = carried
        .https
        .as_ref()
        .or(carried.http.as_ref())
        .ok_or_else(|| bad("trace-only scans need an http(s) URL"))?;
    let url = http::join_url(base, trace);
    let synced = http::fetch_trace(client, &url, limits.io_timeout)
        .await?
        .ok_or_else(|| ScanError::Garbage {
            line: 1,
            excerpt: format!("{url} holds no timestamp"),
        })?;
    let newest = index.iter().map(|e| e.mtime).max().unwrap_or(0);
    if synced < newest {
        let why = format!(
            "the mirror's last sync ({synced}) is older than the source's newest file ({newest})"
        );
        return Err(ScanError::BadUrl { url, why });
    }
    let mut availability = Availability {
        mirror: mirror.name.clone(),
        project: project.name.clone(),
        serial: index.serial.clone(),
        scanned_at: now,
        // Clamped as in a full scan: a trace from the future is "synced by now".
        last_sync: Some(synced.min(now)),
        ..Availability::default()
    };
    for e in index.iter() {
        if !carried.paths.is_empty()
            && !carried.paths.iter().any(|p| e.path.starts_with(p.as_str()))
        {
            continue;
        }
        if classes.is_mutable(e.path) {
            availability
                .mutable
                .push(mirrorfleet_crds::state::MutableSeen {
                    id: e.id,
                    size: e.size,
                    mtime: e.mtime,
                });
        } else {
            availability.present.insert(e.id);
        }
        availability.counts.files += 1;
        availability.counts.bytes += e.size;
    }
    availability.mutable.sort_unstable_by_key(|m| m.id);
    Ok(availability)
}

/// Scans `project`'s local tree at `root` on the blocking pool (hashing only what changed
/// since `previous`), logging what was left out.
pub async fn scan_local(
    project: &ProjectState,
    root: &Path,
    previous: Option<&FileIndex>,
    limits: &Limits,
    progress: bool,
) -> Result<source::SourceScan, ScanError> {
    let (name, root, kinds, prev, limits) = (
        project.name.clone(),
        root.to_path_buf(),
        project.hashes.clone(),
        previous.cloned(),
        *limits,
    );
    let scan = tokio::task::spawn_blocking(move || {
        source::scan_local(&name, &root, &kinds, prev.as_ref(), &limits, progress)
    })
    .await
    .map_err(|e| ScanError::Io {
        what: "source scan task failed for",
        path: project.name.clone(),
        source: std::io::Error::other(e),
    })??;
    for (path, why) in scan.skipped.iter().take(20) {
        tracing::info!(project = %project.name, path, why, "left out of the index");
    }
    Ok(scan)
}

/// Builds a project's index from its source: a local tree, or an upstream listing with digests
/// from the project's checksum files.
pub async fn scan_source(
    project: &ProjectState,
    previous: Option<&FileIndex>,
    limits: &Limits,
    progress: bool,
) -> Result<FileIndex, ScanError> {
    if let Some(root) = &project.source.local {
        let scan = scan_local(project, Path::new(root), previous, limits, progress).await?;
        return Ok(scan.index);
    }
    let client = http::client(limits.io_timeout)?;
    let (listing, fetch_base) = match (&project.source.rsync, &project.source.http) {
        (Some(url), _) => (rsync::list(url, limits).await?, url.clone()),
        (None, Some(url)) => (http::crawl(&client, url, limits).await?, url.clone()),
        _ => {
            return Err(ScanError::BadUrl {
                url: String::new(),
                why: format!("project {} has no source", project.name),
            });
        }
    };
    let mut records: Vec<FileRecord> = listing
        .files
        .iter()
        .map(|f| FileRecord {
            path: f.path.clone(),
            size: f.size,
            mtime: f.mtime.unwrap_or(0),
            digests: vec![None; project.hashes.len()],
        })
        .collect();
    for (pattern, kind) in &project.source.checksum_files {
        let Some(slot) = project.hashes.iter().position(|h| h == kind) else {
            continue;
        };
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| ScanError::BadUrl {
                url: pattern.clone(),
                why: e.to_string(),
            })?
            .compile_matcher();
        let sums_files: Vec<String> = listing
            .files
            .iter()
            .filter(|f| glob.is_match(&f.path) && f.size < 64 << 20)
            .map(|f| f.path.clone())
            .collect();
        for sums_path in sums_files {
            let text = fetch_small(&client, &fetch_base, &sums_path, limits).await?;
            let dir = sums_path
                .rsplit_once('/')
                .map_or(String::new(), |(d, _)| format!("{d}/"));
            let sums = super::checksums::parse(&text, kind.digest_len());
            for r in &mut records {
                if let Some(name) = r.path.strip_prefix(dir.as_str())
                    && let Some(d) = sums.get(name)
                {
                    r.digests[slot] = Some(d.clone());
                }
            }
        }
    }
    let serial = source::serial_of(&records);
    Ok(FileIndex::build(
        &project.name,
        &serial,
        &project.hashes,
        records,
        previous,
    ))
}

/// Most mutable metadata files a probe looks at (without a trace file).
const MAX_PROBED: usize = 16;

/// A cheap fingerprint of an upstream source (rsync or HTTP), to tell whether it changed
/// since the last look without listing it: the content of its trace file when the project
/// names one; else, on HTTP, the size, `Last-Modified` and `ETag` of (up to 16 of) the
/// mutable metadata files `index` holds. `None` when neither applies (an rsync upstream
/// without a trace file is left to the periodic scans; so is an HTTP one without an index
/// yet), or for a local source.
pub async fn probe_upstream(
    project: &ProjectState,
    index: Option<&FileIndex>,
    limits: &Limits,
) -> Result<Option<String>, ScanError> {
    let base = match (&project.source.rsync, &project.source.http) {
        (Some(url), _) | (None, Some(url)) if project.source.local.is_none() => url,
        _ => return Ok(None),
    };
    let client = http::client(limits.io_timeout)?;
    if let Some(trace) = &project.trace_file {
        return fetch_small(&client, base, trace, limits).await.map(Some);
    }
    let Some(index) = index.filter(|_| !base.starts_with("rsync://")) else {
        return Ok(None);
    };
    let classes = PathClasses::of(project).map_err(|why| ScanError::BadUrl {
        url: base.clone(),
        why,
    })?;
    let mut fingerprint = String::new();
    for e in index
        .iter()
        .filter(|e| classes.is_mutable(e.path))
        .take(MAX_PROBED)
    {
        let encoded: Vec<String> = e.path.split('/').map(http::percent_encode).collect();
        let url = http::join_url(base, &encoded.join("/"));
        let resp = client
            .head(&url)
            .timeout(limits.io_timeout)
            .send()
            .await
            .map_err(|err| ScanError::Http {
                url: url.clone(),
                why: err.to_string(),
            })?;
        let header = |name: reqwest::header::HeaderName| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        fingerprint.push_str(&format!(
            "{} {} {} {} {}\n",
            e.path,
            resp.status().as_u16(),
            header(reqwest::header::CONTENT_LENGTH),
            header(reqwest::header::LAST_MODIFIED),
            header(reqwest::header::ETAG),
        ));
    }
    Ok((!fingerprint.is_empty()).then_some(fingerprint))
}

/// Fetches a small file (a checksum file) from an rsync or HTTP upstream.
async fn fetch_small(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    limits: &Limits,
) -> Result<String, ScanError> {
    if base.starts_with("rsync://") {
        let dir = tempfile::tempdir().map_err(|source| ScanError::Io {
            what: "cannot create a temporary directory for",
            path: path.into(),
            source,
        })?;
        let dest = dir.path().join("sums");
        let out = tokio::time::timeout(
            limits.io_timeout * 2,
            tokio::process::Command::new("rsync")
                .arg(format!("--timeout={}", limits.io_timeout.as_secs().max(1)))
                .arg("--max-size=64m")
                .arg(format!("{base}{path}"))
                .arg(&dest)
                .env_clear()
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .output(),
        )
        .await
        .map_err(|_| ScanError::Stalled(limits.io_timeout * 2))?
        .map_err(|source| ScanError::Spawn {
            program: "rsync",
            source,
        })?;
        if !out.status.success() {
            return Err(ScanError::Exit {
                program: "rsync",
                code: out.status.code().unwrap_or(-1),
                stderr: super::excerpt(&String::from_utf8_lossy(&out.stderr)),
            });
        }
        return std::fs::read_to_string(&dest).map_err(|source| ScanError::Io {
            what: "cannot read",
            path: path.into(),
            source,
        });
    }
    let url = http::join_url(base, path);
    let resp = client
        .get(&url)
        .timeout(limits.io_timeout)
        .send()
        .await
        .map_err(|e| ScanError::Http {
            url: url.clone(),
            why: e.to_string(),
        })?;
    if !resp.status().is_success() {
        return Err(ScanError::Http {
            url,
            why: format!("HTTP status {}", resp.status()),
        });
    }
    resp.text().await.map_err(|e| ScanError::Http {
        url,
        why: e.to_string(),
    })
}

/// Default limits for a mirror, honouring its scan timeout.
pub fn limits_for(mirror: &MirrorState) -> Limits {
    let mut limits = Limits::default();
    if let Some(t) = mirror.scan_timeout_seconds {
        limits.deadline = Duration::from_secs(u64::from(t));
    }
    limits
}
