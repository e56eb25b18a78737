//! The HTTP server: hyper 1.x (HTTP/1.1 and h2c on the same port), one task per listener,
//! graceful shutdown (stop accepting, drain with a deadline, flush stats). Handlers borrow the
//! current snapshot from an [`ArcSwap`] — no lock, no await on shared state — decide with
//! [`select`], and answer with [`respond`].

use std::cell::Cell;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};

use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use ipnet::IpNet;
use mirrorfleet_store::Store;
use tokio::net::TcpListener;

use crate::filestats;
use crate::metrics::{Metrics, Outcome as M};
use crate::request::{
    APT_LIST, CHECKSUMS, Form, clean_path, has_file, if_modified_since, query_has, query_value,
    suffix_form,
};
use mirrorfleet_crds::url::encode_path;
use mirrorfleet_geo::Geo;

use crate::respond::{self, Body};
use crate::select::{self, Facts, Outcome};
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

    /// Answers one request.
    pub fn answer(&self, peer: IpAddr, req: &Request<Incoming>) -> (Response<Body>, M) {
        let head_or_get = req.method() == Method::GET || req.method() == Method::HEAD;
        let raw = req.uri().path();
        match raw {
            "/healthz" => return (respond::text(StatusCode::OK, "ok\n"), M::Admin),
            "/readyz" => {
                let ready = self.snapshot.load().loaded;
                let r = if ready {
                    respond::text(StatusCode::OK, "ready\n")
                } else {
                    respond::unavailable("no fleet state loaded yet")
                };
                return (r, M::Admin);
            }
            "/metrics" => {
                return (
                    respond::text(StatusCode::OK, self.metrics.render()),
                    M::Admin,
                );
            }
            _ => {}
        }
        if head_or_get
            && let Some(query) = req.uri().query()
            && query_has(query, "mirrorstats")
        {
            let counts = self.stats.fleet_counts();
            let snap = self.snapshot.load();
            let wants_json = query_has(query, "json")
                || req
                    .headers()
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|a| a.contains("application/json"));
            let page = if wants_json {
                crate::mirrorstats::json(&snap, &counts)
            } else {
                crate::mirrorstats::html(&snap, &counts)
            };
            return (page, M::Mirrorstats);
        }
        if !head_or_get {
            let mut r = respond::text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return (r, M::BadRequest);
        }
        let path = match clean_path(raw) {
            Ok(p) => p,
            Err(status) => return (respond::text(status, "bad request path\n"), M::BadRequest),
        };
        // A guard, not a clone: no shared reference count touched per request.
        let snap = self.snapshot.load();
        if !snap.loaded {
            return (
                respond::unavailable("no fleet state loaded yet"),
                M::Unavailable,
            );
        }
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let Some((project, rel)) = snap.route(host, &path) else {
            return (
                respond::text(StatusCode::NOT_FOUND, "not found\n"),
                M::NotFound,
            );
        };
        let query = req.uri().query().unwrap_or("");
        let headers = req.headers();
        let mut ip = crate::facts::client_ip(peer, headers, &self.config.trusted_proxies);
        let mirrorlist = query_has(query, "mirrorlist");
        if mirrorlist && let Some(from) = query_value(query, "fromip").and_then(|v| v.parse().ok())
        {
            ip = from;
        }
        let geo = self.geo.lookup(ip);
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let wants_json = query_has(query, "json") || accept.contains("application/json");
        let (rel, form) = match suffix_form(&snap, project, rel) {
            Some((file, form)) => (file, Some(form)),
            None => (rel, None),
        };
        let checksum = match form {
            Some(Form::Checksum(kind)) => Some(kind),
            _ => CHECKSUMS
                .into_iter()
                .find(|(k, _)| query_has(query, k))
                .map(|(_, kind)| kind),
        };
        let metalink = form == Some(Form::Metalink)
            || query_has(query, "metalink")
            || query_has(query, "meta4")
            || accept.contains(respond::METALINK);
        let facts = Facts {
            project,
            path: rel,
            // `?https=1` asks for HTTPS mirrors only, like Mirrorbits (never the reverse: an
            // HTTPS client is not sent to plain HTTP).
            https_only: crate::facts::came_over_https(peer, headers, &self.config.trusted_proxies)
                || query_value(query, "https") == Some("1"),
            ip,
            geo,
            now: now(),
            random: random(),
            sticky: self.config.sticky,
            explain: mirrorlist || wants_json || metalink,
        };
        if rel.is_empty() || rel.ends_with('/') {
            return self.directory(&snap, project, &path, rel, wants_json);
        }
        if rel == APT_LIST && !has_file(&snap, project, rel) {
            // Every qualifying mirror, not only the best few: apt tries them in order.
            let all = Facts {
                explain: true,
                ..facts
            };
            let d = select::select_project(&all, &snap);
            let fallbacks: Vec<&str> = match d.outcome {
                Outcome::Mirror => vec![],
                _ => snap.projects[project]
                    .state
                    .fallbacks
                    .iter()
                    .map(|f| f.url.as_str())
                    .filter(|u| !facts.https_only || u.starts_with("https://"))
                    .collect(),
            };
            return (
                respond::apt_list(&snap, project, &d, &fallbacks, ip, &geo),
                M::Mirrorlist,
            );
        }
        let d = select::select(&facts, &snap);
        if let Some(kind) = checksum {
            let r = respond::checksum(d.file.as_ref(), kind);
            let m = if r.status() == StatusCode::OK {
                M::Checksum
            } else {
                M::NotFound
            };
            return (r, m);
        }
        let encoded = encode_path(rel);
        let fallback_base = |i: usize| {
            snap.projects[project]
                .state
                .fallbacks
                .get(i)
                .map(|f| f.url.as_str())
        };
        if mirrorlist {
            return (
                respond::mirrorlist(&snap, project, &d, rel, ip, &geo),
                M::Mirrorlist,
            );
        }
        if metalink {
            let fallbacks: Vec<String> = snap.projects[project]
                .state
                .fallbacks
                .iter()
                .filter(|f| !facts.https_only || f.url.starts_with("https://"))
                .map(|f| respond::join(&f.url, &encoded))
                .collect();
            let r = respond::metalink(&snap, project, &d, rel, &fallbacks);
            let m = if r.status() == StatusCode::OK {
                M::Metalink
            } else {
                M::NotFound
            };
            return (r, m);
        }
        // RFC 9110 §13.1.3: a copy at least as new as the index's needs no download.
        if let Some(file) = &d.file
            && file.mtime > 0
            && let Some(since) = if_modified_since(headers)
            && file.mtime <= since
        {
            return (respond::not_modified(file.mtime), M::NotModified);
        }
        if wants_json && d.outcome != Outcome::NotFound {
            let fb = match d.outcome {
                Outcome::Fallback(i) => fallback_base(i).map(|b| respond::join(b, &encoded)),
                _ => None,
            };
            return (
                respond::json(&snap, project, &d, rel, ip, &geo, fb),
                M::Json,
            );
        }
        match d.outcome {
            Outcome::NotFound => {
                // A directory asked for without its slash.
                let dir = format!("{rel}/");
                if snap.projects[project]
                    .index
                    .as_deref()
                    .is_some_and(|i| i.has_dir(&dir))
                {
                    let to = format!("{}/", encode_path(&path));
                    return (respond::moved(&to), M::Listing);
                }
                (
                    respond::text(StatusCode::NOT_FOUND, "not found\n"),
                    M::NotFound,
                )
            }
            Outcome::Unavailable => (
                respond::unavailable("no mirror and no fallback can serve this file right now"),
                M::Unavailable,
            ),
            Outcome::Fallback(i) => {
                let Some(base) = fallback_base(i) else {
                    return (respond::unavailable("no fallback"), M::Unavailable);
                };
                if req.method() == Method::GET
                    && let Some(pos) = d.file_pos
                {
                    self.stats.count(stats::Event {
                        snap: &snap,
                        project,
                        file: pos,
                        mirror: None,
                        country: geo.country,
                        at: facts.now,
                    });
                }
                (
                    respond::redirect(base, &snap, project, &d, &encoded, &encode_path(&path)),
                    M::Fallback,
                )
            }
            Outcome::Mirror => {
                let Some(base) = respond::choice_base(&snap, project, &d, 0) else {
                    return (
                        respond::unavailable("the chosen mirror has no URL"),
                        M::Unavailable,
                    );
                };
                if req.method() == Method::GET
                    && let Some(pos) = d.file_pos
                {
                    let mirror = Some(d.choices[0].mirror);
                    self.stats.count(stats::Event {
                        snap: &snap,
                        project,
                        file: pos,
                        mirror,
                        country: geo.country,
                        at: facts.now,
                    });
                }
                (
                    respond::redirect(base, &snap, project, &d, &encoded, &encode_path(&path)),
                    M::Redirect,
                )
            }
        }
    }
}

impl App {
    /// `?stats` on a file of a project (GET or HEAD): what it asks, or the `400` for a period
    /// that is not one; `None` for every other request (the usual answer then follows).
    fn file_stats_ask(
        &self,
        req: &Request<Incoming>,
    ) -> Option<Result<filestats::Ask, Response<Body>>> {
        let query = req.uri().query()?;
        if !query_has(query, "stats")
            || !(req.method() == Method::GET || req.method() == Method::HEAD)
        {
            return None;
        }
        let period = match query_value(query, "stats") {
            Some(v) => match filestats::period(v) {
                Some(p) => Some(p),
                None => return Some(Err(filestats::bad_period())),
            },
            None => None,
        };
        let path = clean_path(req.uri().path()).ok()?;
        let snap = self.snapshot.load();
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let (project, rel) = snap.route(host, &path)?;
        if !has_file(&snap, project, rel) {
            return None;
        }
        Some(Ok(filestats::Ask {
            project: snap.projects.get(project)?.state.name.clone(),
            path: rel.to_owned(),
            period,
        }))
    }

    /// A directory of a project (`rel` empty or ending in `/`), listed from its index.
    fn directory(
        &self,
        snap: &Snapshot,
        project: usize,
        path: &str,
        rel: &str,
        wants_json: bool,
    ) -> (Response<Body>, M) {
        let Some(index) = snap.projects.get(project).and_then(|p| p.index.as_deref()) else {
            return (
                respond::unavailable("this project's file index is not loaded yet"),
                M::Unavailable,
            );
        };
        if !rel.is_empty() && !index.has_dir(rel) {
            return (
                respond::text(StatusCode::NOT_FOUND, "not found\n"),
                M::NotFound,
            );
        }
        let (entries, truncated) = index.dir_entries(rel, respond::LISTING_LIMIT);
        (
            respond::listing(path, rel.is_empty(), &entries, truncated, wants_json),
            M::Listing,
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
    let (mut resp, outcome) = match app.file_stats_ask(&req) {
        None => app.answer(peer.ip(), &req),
        Some(Ok(ask)) => {
            let read = |wanted, deadline| app.stats.read_fields(wanted, deadline);
            (filestats::answer(&ask, now(), read).await, M::FileStats)
        }
        Some(Err(bad)) => (bad, M::BadRequest),
    };
    resp.headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("mirrorfleet"));
    if req.method() == Method::HEAD {
        *resp.body_mut() = Body::default();
    }
    app.metrics.observe(outcome, started.elapsed());
    resp
}
