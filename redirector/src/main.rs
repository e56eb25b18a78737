//! `mirrorfleet-redirector`: parses its configuration once (clap names every bad flag with its
//! value), opens the store and the GeoIP databases, binds every listener, and serves until
//! SIGINT or SIGTERM. Exit codes: 0 after a clean shutdown, 2 when it could not start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ipnet::IpNet;
use mirrorfleet_geo::Geo;
use mirrorfleet_redirector::server::{self, Config};
use mirrorfleet_store::StoreArgs;

#[derive(Debug, Parser)]
#[command(
    name = "mirrorfleet-redirector",
    version,
    about = "Sends each download to the best mirror"
)]
struct Args {
    /// Address to listen on (repeat for several; `[::]:8080` also accepts IPv4).
    #[arg(
        long,
        default_value = "[::]:8080",
        env = "MIRRORFLEET_LISTEN",
        value_delimiter = ','
    )]
    listen: Vec<SocketAddr>,
    #[command(flatten)]
    store: StoreArgs,
    /// GeoIP City or Country database (MaxMind format).
    #[arg(long, env = "MIRRORFLEET_GEOIP_CITY")]
    geoip_city: Option<PathBuf>,
    /// GeoIP ASN database (MaxMind format).
    #[arg(long, env = "MIRRORFLEET_GEOIP_ASN")]
    geoip_asn: Option<PathBuf>,
    /// A proxy (CIDR) whose X-Forwarded-For / Forwarded / X-Forwarded-Proto are believed.
    #[arg(
        long = "trusted-proxy",
        env = "MIRRORFLEET_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<IpNet>,
    /// Keep each client network on one mirror (rendezvous hashing) instead of drawing per request.
    #[arg(long, env = "MIRRORFLEET_STICKY")]
    sticky: bool,
    /// Seconds between download-stats flushes to the store (counts are kept in memory between
    /// flushes and flushed on shutdown).
    #[arg(long, env = "MIRRORFLEET_STATS_INTERVAL", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=3600))]
    stats_interval: u64,
    /// Log as JSON lines.
    #[arg(long, env = "MIRRORFLEET_LOG_JSON")]
    log_json: bool,
    /// Seconds a client has to send a request's headers (also how long an idle keep-alive
    /// connection stays open).
    #[arg(long, env = "MIRRORFLEET_HEADER_READ_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_read_timeout: u64,
    /// Seconds, on SIGTERM, that `/readyz` answers 503 while connections are still accepted,
    /// before the listeners close and open connections drain (up to 10 s).
    #[arg(long, env = "MIRRORFLEET_DRAIN_DELAY", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=3600))]
    drain_delay: u64,
    /// Listen with SO_REUSEPORT: a new redirector can take the same port before the old one
    /// drains (see also systemd socket activation, which needs no flag).
    #[arg(long, env = "MIRRORFLEET_REUSE_PORT")]
    reuse_port: bool,
    /// Most client connections open at once.
    #[arg(long, env = "MIRRORFLEET_MAX_CONNECTIONS", default_value_t = 16_384, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Most connections open at once from one client address (trusted proxies are exempt).
    #[arg(long, env = "MIRRORFLEET_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections_per_client: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    mirrorfleet_runtime::init_logging(args.log_json);
    // Before any other thread runs: taking the sockets clears LISTEN_FDS from the environment.
    let inherited = match inherited_listeners() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %mirrorfleet_runtime::error_chain(&*e), "cannot use the inherited sockets");
            return ExitCode::FAILURE;
        }
    };
    mirrorfleet_runtime::block_on_main("mirrorfleet-redirector", async move {
        run(args, inherited).await.map(|()| ExitCode::SUCCESS)
    })
}

/// The listening sockets systemd passed (socket activation: `LISTEN_FDS`, `LISTEN_PID`);
/// none without it. `--listen` is then ignored.
fn inherited_listeners() -> anyhow::Result<Vec<std::net::TcpListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut out = Vec::new();
    for i in 0..fds.len() {
        let l = fds.take_tcp_listener(i).map_err(|e| {
            anyhow::anyhow!("inherited socket {i} (LISTEN_FDS) is not a TCP listener: {e}")
        })?;
        let Some(l) = l else { continue };
        l.set_nonblocking(true)?;
        out.push(l);
    }
    Ok(out)
}

/// A listener on `addr`; with `reuse_port`, SO_REUSEPORT, so that a new process can listen on
/// the same port before this one leaves (a zero-downtime upgrade on one host).
fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn run(args: Args, inherited: Vec<std::net::TcpListener>) -> anyhow::Result<()> {
    let store = args.store.open().await?;
    let geo = Geo::open(args.geoip_city.clone(), args.geoip_asn.clone())?;
    let mut listeners = Vec::new();
    for l in inherited {
        let l = tokio::net::TcpListener::from_std(l)?;
        tracing::info!(addr = ?l.local_addr().ok(), "listening on an inherited socket");
        listeners.push(l);
    }
    if listeners.is_empty() {
        for addr in &args.listen {
            let l = bind(*addr, args.reuse_port)
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
            tracing::info!(%addr, reuse_port = args.reuse_port, "listening");
            listeners.push(l);
        }
    }
    let config = Config {
        trusted_proxies: args.trusted_proxies.clone(),
        sticky: args.sticky,
        stats_every: std::time::Duration::from_secs(args.stats_interval),
        header_read_timeout: std::time::Duration::from_secs(args.header_read_timeout),
        drain_delay: std::time::Duration::from_secs(args.drain_delay),
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        max_connections_per_client: usize::try_from(args.max_connections_per_client)
            .unwrap_or(usize::MAX),
        ..Config::default()
    };
    server::run(
        listeners,
        store,
        geo,
        config,
        mirrorfleet_runtime::shutdown_signal(),
    )
    .await;
    tracing::info!("stopped");
    Ok(())
}
