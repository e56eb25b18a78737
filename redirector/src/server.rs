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
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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
    /// On shutdown, how long `/readyz` answers 503 while connections are still accepted and
    /// answered, before the listeners close (for load balancers and Kubernetes endpoints to
    /// stop sending new connections first).
    pub drain_delay: Duration,
    /// How long a client has to send a request's headers once the server waits for them —
    /// for the first request and, on an idle keep-alive connection, for the next: a slow or
    /// silent client, or an idle one, is disconnected after it (HTTP/1).
    pub header_read_timeout: Duration,
    /// Most client connections open at once; more are closed as they are accepted.
    pub max_connections: usize,
    /// Most connections open at once from one client address (trusted proxies, which carry
    /// many clients, are exempt).
    pub max_connections_per_client: usize,
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
            drain_delay: Duration::ZERO,
            header_read_timeout: Duration::from_secs(10),
            max_connections: 16_384,
            max_connections_per_client: 256,
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
    /// Shutting down: `/readyz` says so.
    draining: std::sync::atomic::AtomicBool,
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
            draining: std::sync::atomic::AtomicBool::new(false),
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
                Ask::Ready if self.draining.load(std::sync::atomic::Ordering::Relaxed) => {
                    return answer::draining();
                }
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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    let open = Arc::new(Open::default());
    let mut accept_tasks = Vec::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for listener in listeners {
        let app = app.clone();
        let builder = builder.clone();
        let graceful = graceful.clone();
        let open = open.clone();
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
                let exempt = app
                    .config
                    .trusted_proxies
                    .iter()
                    .any(|n| n.contains(&peer.ip()));
                let Some(slot) = open.take(peer.ip(), exempt, &app.config, &app.metrics) else {
                    app.metrics
                        .connections_refused
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let app_timeout = app.config.header_read_timeout;
                let app = app.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(handle(&app, peer, req).await) }
                });
                // The first request's headers must start within the header-read timeout too:
                // hyper's own timer only runs once it has told HTTP/1 from HTTP/2, which takes
                // a first byte.
                let stream = FirstByte::new(stream, app_timeout);
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(slot);
                });
            }
        }));
    }
    shutdown.await;
    // Not ready any more, but still accepting and answering for the delay; then the
    // listeners close and open connections drain.
    app.draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    if !config.drain_delay.is_zero() {
        tracing::info!(delay = ?config.drain_delay, "draining: not ready, still accepting");
        tokio::time::sleep(config.drain_delay).await;
    }
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

/// A client connection that fails with `TimedOut` when its first byte has not come within
/// a deadline of its acceptance; after that, the plain stream.
struct FirstByte {
    stream: tokio::net::TcpStream,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl FirstByte {
    fn new(stream: tokio::net::TcpStream, within: Duration) -> FirstByte {
        FirstByte {
            stream,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
        }
    }
}

impl tokio::io::AsyncRead for FirstByte {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let before = buf.filled().len();
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no request within the header-read timeout",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl tokio::io::AsyncWrite for FirstByte {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The connections open, in all and per client address.
#[derive(Debug, Default)]
struct Open {
    total: std::sync::atomic::AtomicUsize,
    per_client: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
}

impl Open {
    /// A slot for a new connection from `ip`, or `None` over a cap.
    fn take(
        self: &Arc<Self>,
        ip: IpAddr,
        exempt: bool,
        config: &Config,
        metrics: &Arc<Metrics>,
    ) -> Option<Slot> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.total.fetch_add(1, Relaxed) >= config.max_connections {
            self.total.fetch_sub(1, Relaxed);
            return None;
        }
        if !exempt {
            let mut per = self.per_client.lock().unwrap_or_else(|p| p.into_inner());
            let n = per.entry(ip).or_default();
            if *n >= config.max_connections_per_client {
                drop(per);
                self.total.fetch_sub(1, Relaxed);
                return None;
            }
            *n += 1;
        }
        metrics.connections_open.fetch_add(1, Relaxed);
        Some(Slot {
            open: self.clone(),
            ip: (!exempt).then_some(ip),
            metrics: metrics.clone(),
        })
    }
}

/// One open connection's place under the caps, given back when dropped.
struct Slot {
    open: Arc<Open>,
    /// The client address counted (not for an exempt proxy).
    ip: Option<IpAddr>,
    metrics: Arc<Metrics>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.open.total.fetch_sub(1, Relaxed);
        self.metrics.connections_open.fetch_sub(1, Relaxed);
        if let Some(ip) = self.ip {
            let mut per = self
                .open
                .per_client
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(n) = per.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per.remove(&ip);
                }
            }
        }
    }
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
