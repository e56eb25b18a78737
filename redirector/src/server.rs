//! The HTTP server: hyper 1.x (HTTP/1.1 and h2c on the same port), one task per listener,
//! graceful shutdown (stop accepting, drain with a deadline, flush stats). Handlers borrow the
//! current snapshot from an [`ArcSwap`] — no lock, no await on shared state — classify the
//! request with [`request::classify`] and dispatch on what it asks to the answers of
//! [`crate::respond::answer`], which select with [`crate::select`].

use std::cell::Cell;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};

use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use ipnet::IpNet;
use mirrorfleet_store::Store;
use tokio::net::TcpListener;

use crate::filestats;
use crate::metrics::{Metrics, Outcome as M};
use crate::request::{self, Ask};
use mirrorfleet_geo::Geo;

use crate::respond::Body;
use crate::respond::answer::{self, Context};
use crate::snapshot::Snapshot;
use crate::stats::{self, Stats};

/// Server settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Keep one client network on one mirror.
    pub sticky: bool,
    /// How often stats are flushed.
    pub stats_every: Duration,
    /// How often the full state is compared with the store, as a safety net for events.
    pub resync_every: Duration,
    /// How often GeoIP files are checked for changes.
    pub geo_every: Duration,
    /// How long connections may drain on shutdown.
    pub drain: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            trusted_proxies: vec![],
            sticky: false,
            stats_every: Duration::from_secs(1),
            resync_every: Duration::from_secs(30),
            geo_every: Duration::from_secs(60),
            drain: Duration::from_secs(10),
        }
    }
}

/// Shared state of the handlers.
#[derive(Debug)]
pub struct App {
    /// The snapshot served.
    pub snapshot: ArcSwap<Snapshot>,
    /// GeoIP.
    pub geo: Geo,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    stats: Stats,
    config: Config,
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) ^ (&0u8 as *const u8 as u64)
    );
}

fn random() -> u64 {
    RNG.with(|r| {
        let mut x = r.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        r.set(x);
        x
    })
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl App {
    /// Creates the handlers' state; `stats` comes from [`stats::start`].
    pub fn new(geo: Geo, metrics: Arc<Metrics>, stats: Stats, config: Config) -> App {
        App {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            geo,
            metrics,
            stats,
            config,
        }
    }

    /// Answers one request: classified by [`request::classify`], answered by the kind's
    /// function in [`answer`] from the snapshot borrowed for it. A file's `?stats` reads the
    /// store, so it is answered after the snapshot is let go.
    pub async fn answer(&self, peer: IpAddr, req: &Request<Incoming>) -> (Response<Body>, M) {
        let file_stats = {
            // A guard, not a clone: no shared reference count touched per request.
            let guard = self.snapshot.load();
            let snap = &*guard;
            let cx = || Context {
                snap,
                peer,
                method: req.method(),
                headers: req.headers(),
                geo: &self.geo,
                stats: &self.stats,
                trusted_proxies: &self.config.trusted_proxies,
                sticky: self.config.sticky,
                now: now(),
                random: random(),
            };
            match request::classify(req.method(), req.uri(), req.headers(), snap) {
                Ask::FileStats(ask) => ask,
                Ask::Health => return answer::health(),
                Ask::Ready => return answer::ready(snap),
                Ask::Metrics => return answer::metrics(&self.metrics),
                Ask::Mirrorstats { json } => return answer::mirrorstats(snap, &self.stats, json),
                Ask::Duties { mirror } => return crate::respond::duties::answer(snap, mirror),
                Ask::BadPeriod => return answer::bad_period(),
                Ask::MethodNotAllowed => return answer::method_not_allowed(),
                Ask::BadPath(status) => return answer::bad_path(status),
                Ask::NotLoaded => return answer::not_loaded(),
                Ask::NoProject => return answer::not_found(),
                Ask::StatsUnindexed { at } => return answer::stats_unindexed(snap, &at),
                Ask::Listing { at, json } => return answer::listing(&cx(), &at, json),
                Ask::AptList { at, from } => return answer::apt_list(&cx(), &at, from),
                Ask::Checksum { at, kind } => return answer::checksum(snap, &at, kind),
                Ask::Mirrorlist { at, from } => return answer::mirrorlist(&cx(), &at, from),
                Ask::Metalink { at } => return answer::metalink(&cx(), &at),
                Ask::Json { at } => return answer::json(&cx(), &at),
                Ask::Download { at } => return answer::download(&cx(), &at),
            }
        };
        let read = |wanted, deadline| self.stats.read_fields(wanted, deadline);
        (
            filestats::answer(&file_stats, now(), read).await,
            M::FileStats,
        )
    }
}

/// Keeps `app`'s snapshot current from `store` until the returned task is dropped.
pub async fn follow_store<S: Store + Clone>(
    app: Arc<App>,
    store: S,
    resync_every: Duration,
) -> tokio::task::JoinHandle<()> {
    let mut rx = mirrorfleet_store::follow(store, resync_every).await;
    tokio::spawn(async move {
        loop {
            let state = rx.borrow_and_update().clone();
            if state.fleet.is_some() {
                let snap = Snapshot::build(&state);
                app.metrics
                    .generation
                    .store(snap.generation, std::sync::atomic::Ordering::Relaxed);
                app.metrics
                    .snapshot_built
                    .store(now().max(0) as u64, std::sync::atomic::Ordering::Relaxed);
                app.snapshot.store(Arc::new(snap));
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
}

/// Runs the server on `listeners` until `shutdown` resolves, then drains and flushes stats.
pub async fn run<S: Store + Clone>(
    listeners: Vec<TcpListener>,
    store: S,
    geo: Geo,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Arc<App> {
    let metrics = Arc::new(Metrics::default());
    let (stats, stop_stats) = stats::start(store.clone(), metrics.clone(), config.stats_every);
    let app = Arc::new(App::new(geo, metrics, stats, config.clone()));
    let follower = follow_store(app.clone(), store, config.resync_every).await;
    let geo_app = app.clone();
    let geo_every = config.geo_every;
    let geo_task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(geo_every);
        loop {
            tick.tick().await;
            match geo_app.geo.reload_if_changed() {
                Ok(true) => tracing::info!("GeoIP databases reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %mirrorfleet_runtime::error_chain(&e), "GeoIP reload failed; keeping the old databases")
                }
            }
        }
    });
    let graceful = Arc::new(GracefulShutdown::new());
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut accept_tasks = Vec::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for listener in listeners {
        let app = app.clone();
        let builder = builder.clone();
        let graceful = graceful.clone();
        let mut stop = stop_rx.clone();
        accept_tasks.push(tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    r = listener.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = stop.changed() => return,
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(handle(&app, peer, req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        }));
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    for t in accept_tasks {
        let _ = t.await;
    }
    match Arc::try_unwrap(graceful) {
        Ok(graceful) => {
            if tokio::time::timeout(config.drain, graceful.shutdown())
                .await
                .is_err()
            {
                tracing::warn!(deadline = ?config.drain, "connections still open after the drain deadline; closing them");
            }
        }
        Err(_) => tracing::warn!("accept loops still hold the shutdown handle; not draining"),
    }
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    if stop_stats.send(done_tx).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(5), done_rx).await;
    }
    follower.abort();
    geo_task.abort();
    app
}

async fn handle(app: &App, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let (mut resp, outcome) = app.answer(peer.ip(), &req).await;
    resp.headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("mirrorfleet"));
    if req.method() == Method::HEAD {
        *resp.body_mut() = Body::default();
    }
    app.metrics.observe(outcome, started.elapsed());
    resp
}
