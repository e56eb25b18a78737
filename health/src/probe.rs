//! One health probe: resolve the host, keep the addresses of the family probed, `HEAD` the
//! canary file over a fresh connection (a pooled one would hide a server that stopped
//! accepting), and name precisely what went wrong. [`resolve`] and [`head`] are the steps on
//! their own, for `mirrorfleet validate --probe`.

use std::error::Error as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mirrorfleet_crds::state::Family;

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The canary answered as expected.
    Ok,
    /// It did not.
    Failed(Failure),
}

/// Why a probe failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The host name does not resolve.
    #[error("DNS lookup of {host} failed: {why}")]
    Dns {
        /// Host name.
        host: String,
        /// Resolver message.
        why: String,
    },
    /// The host has no address of the family probed.
    #[error("{host} has no {family} address")]
    NoAddress {
        /// Host name.
        host: String,
        /// `IPv4` or `IPv6`.
        family: &'static str,
    },
    /// Nothing listens (connection refused).
    #[error("connection refused by {0}")]
    ConnectRefused(String),
    /// Another connection error (unreachable, reset, …).
    #[error("cannot connect to {addr}: {why}")]
    Connect {
        /// Address tried.
        addr: String,
        /// What failed.
        why: String,
    },
    /// The TLS handshake failed (certificate, protocol).
    #[error("TLS with {addr} failed: {why}")]
    Tls {
        /// Address tried.
        addr: String,
        /// What failed.
        why: String,
    },
    /// No complete answer within the timeout.
    #[error("no answer within {0} s")]
    Timeout(u32),
    /// An unexpected HTTP status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The canary's size differs from the one expected (the index's, or the origin's).
    #[error("canary is {got} bytes, expected {expected}")]
    WrongSize {
        /// Size in the index.
        expected: u64,
        /// Size announced.
        got: u64,
    },
    /// The probe URL itself is unusable.
    #[error("bad probe URL {url}: {why}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        why: String,
    },
    /// Anything else (message of the HTTP client).
    #[error("{0}")]
    Other(String),
}

impl Failure {
    /// The PascalCase reason used in the store, conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Dns { .. } => "DnsFailed",
            Failure::NoAddress { .. } => "NoAddress",
            Failure::ConnectRefused(_) => "ConnectRefused",
            Failure::Connect { .. } => "ConnectFailed",
            Failure::Tls { .. } => "TlsFailed",
            Failure::Timeout(_) => "Timeout",
            Failure::Status(_) => "HttpStatus",
            Failure::WrongSize { .. } => "WrongSize",
            Failure::BadUrl { .. } => "BadUrl",
            Failure::Other(_) => "ProbeFailed",
        }
    }
}

/// One URL to probe, with the canary's size when the index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canary {
    /// Full URL.
    pub url: String,
    /// Expected size.
    pub size: Option<u64>,
}

/// How to probe.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSettings {
    /// Address family to use.
    pub family: Family,
    /// Whole-probe deadline.
    pub timeout: Duration,
    /// A 3xx answer counts as healthy.
    pub allow_redirects: bool,
}

/// Probes every canary (in order, stopping at the first failure) within the deadline.
pub async fn probe_all(canaries: &[Canary], settings: &ProbeSettings) -> Outcome {
    let secs = settings.timeout.as_secs().max(1) as u32;
    let all = async {
        for c in canaries {
            if let Err(f) = probe(c, settings).await {
                return Outcome::Failed(f);
            }
        }
        Outcome::Ok
    };
    tokio::time::timeout(settings.timeout, all)
        .await
        .unwrap_or(Outcome::Failed(Failure::Timeout(secs)))
}

/// `HEAD`s one canary within the deadline: the size the server announced (if it did) when
/// the canary answered as expected.
pub async fn head(canary: &Canary, settings: &ProbeSettings) -> Result<Option<u64>, Failure> {
    let secs = settings.timeout.as_secs().max(1) as u32;
    tokio::time::timeout(settings.timeout, probe(canary, settings))
        .await
        .unwrap_or(Err(Failure::Timeout(secs)))
}

/// Resolves `host` (an address literal is its own address, brackets allowed) and keeps the
/// addresses of `family`, with `port`.
pub async fn resolve(host: &str, port: u16, family: Family) -> Result<Vec<SocketAddr>, Failure> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| Failure::Dns {
                host: bare.to_owned(),
                why: e.to_string(),
            })?
            .collect(),
    };
    let v6 = family == Family::Ipv6;
    let addrs: Vec<SocketAddr> = addrs.into_iter().filter(|a| a.is_ipv6() == v6).collect();
    if addrs.is_empty() {
        return Err(Failure::NoAddress {
            host: bare.to_owned(),
            family: if v6 { "IPv6" } else { "IPv4" },
        });
    }
    Ok(addrs)
}

async fn probe(canary: &Canary, settings: &ProbeSettings) -> Result<Option<u64>, Failure> {
    let bad = |why: &str| Failure::BadUrl {
        url: canary.url.clone(),
        why: why.into(),
    };
    let url = url::Url::parse(&canary.url).map_err(|e| bad(&e.to_string()))?;
    let host = url.host_str().ok_or_else(|| bad("no host"))?.to_owned();
    let port = url.port_or_known_default().ok_or_else(|| bad("no port"))?;
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let addrs = resolve(&bare, port, settings.family).await?;
    let first = *addrs
        .first()
        .ok_or_else(|| Failure::Other("no address".into()))?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    // A client per probe: pinned to the addresses of this family, no pooled connections.
    let client = reqwest::Client::builder()
        .user_agent(concat!("mirrorfleet-health/", env!("CARGO_PKG_VERSION")))
        .resolve_to_addrs(&bare, &addrs)
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(settings.timeout)
        .build()
        .map_err(|e| Failure::Other(format!("cannot build an HTTP client: {e}")))?;
    let resp = client
        .head(url)
        .timeout(settings.timeout)
        .send()
        .await
        .map_err(|e| classify(&e, first, settings))?;
    let status = resp.status();
    let announced = resp
        .headers()
        .get(reqwest::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if status.is_redirection() && settings.allow_redirects {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(Failure::Status(status.as_u16()));
    }
    if let (Some(expected), Some(got)) = (canary.size, announced)
        && expected != got
    {
        return Err(Failure::WrongSize { expected, got });
    }
    Ok(announced)
}

/// Names a client error: timeout, refused, TLS, other connection errors.
fn classify(e: &reqwest::Error, addr: SocketAddr, settings: &ProbeSettings) -> Failure {
    if e.is_timeout() {
        return Failure::Timeout(settings.timeout.as_secs().max(1) as u32);
    }
    let mut chain = Vec::new();
    let mut refused = false;
    let mut tls = false;
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
            tls |= io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
        }
        tls |= s.downcast_ref::<rustls::Error>().is_some();
        chain.push(s.to_string());
        source = s.source();
    }
    let why = chain.last().cloned().unwrap_or_else(|| e.to_string());
    let addr = addr.to_string();
    // rustls' errors may reach us boxed inside the connector's own error type: their
    // messages name them too.
    let lower = why.to_ascii_lowercase();
    tls |= [
        "certificate",
        "corrupt message",
        "handshake",
        "tls",
        "alert",
    ]
    .iter()
    .any(|w| lower.contains(w));
    if refused {
        Failure::ConnectRefused(addr)
    } else if tls {
        Failure::Tls { addr, why }
    } else if e.is_connect() {
        Failure::Connect { addr, why }
    } else {
        Failure::Other(chain.join(": "))
    }
}
