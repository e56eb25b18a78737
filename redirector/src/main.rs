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
    mirrorfleet_runtime::block_on_main("mirrorfleet-redirector", async move {
        run(args).await.map(|()| ExitCode::SUCCESS)
    })
}

async fn run(args: Args) -> anyhow::Result<()> {
    let store = args.store.open().await?;
    let geo = Geo::open(args.geoip_city.clone(), args.geoip_asn.clone())?;
    let mut listeners = Vec::new();
    for addr in &args.listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        tracing::info!(%addr, "listening");
        listeners.push(l);
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
