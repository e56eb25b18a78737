//! The operator's `/metrics` (Prometheus text), `/healthz` and `/readyz`. Labels are fixed
//! sets (kinds, error classes, outcomes) — never object names.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters by a label from a fixed set.
#[derive(Debug, Default)]
pub struct Labeled(Mutex<BTreeMap<&'static str, u64>>);

impl Labeled {
    /// Adds one to `label`.
    pub fn inc(&self, label: &'static str) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(label).or_default() += 1;
        }
    }

    /// The count of `label`.
    pub fn get(&self, label: &str) -> u64 {
        self.0
            .lock()
            .map_or(0, |m| m.get(label).copied().unwrap_or(0))
    }

    fn render(&self, out: &mut String, name: &str, label: &str) {
        if let Ok(m) = self.0.lock() {
            for (k, v) in m.iter() {
                let _ = writeln!(out, "{name}{{{label}=\"{k}\"}} {v}");
            }
        }
    }
}

/// A histogram of durations in seconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_ms: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_ms: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if s <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_ms
            .fetch_add(d.as_millis() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0
        );
        let _ = writeln!(out, "{name}_count {n}");
    }
}

/// The operator's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Reconciles by kind.
    pub reconciles: Labeled,
    /// Reconcile errors by class.
    pub errors: Labeled,
    /// Fleet state writes.
    pub fleet_writes: Counter,
    /// Status writes.
    pub status_writes: Counter,
    /// Scan Jobs created.
    pub scan_jobs: Counter,
    /// Assessments of the whole fleet (one per change of the objects).
    pub assessments: Counter,
    /// Requests to the API server by verb (`get`, `watch`, `create`, `patch`, …).
    pub api_requests: Labeled,
    /// Requests to the API server by resource (`mirrors`, `mirrors/status`, `leases`, …).
    pub api_requests_by_resource: Labeled,
    /// Scan durations.
    pub scan_seconds: Histogram,
    /// Health probe durations.
    pub probe_seconds: Histogram,
    /// Probe outcomes (`ok` or a reason).
    pub probes: Labeled,
    /// Health verdicts that changed, by the side they changed to (`down`, `up`,
    /// `rescan_first`), per (mirror, scheme, family).
    pub health_transitions: Labeled,
    /// This replica leads.
    pub leader: AtomicBool,
    /// Ready (caches filled, or following as a standby).
    pub ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reconciles: Labeled::default(),
            errors: Labeled::default(),
            fleet_writes: Counter::default(),
            status_writes: Counter::default(),
            scan_jobs: Counter::default(),
            assessments: Counter::default(),
            api_requests: Labeled::default(),
            api_requests_by_resource: Labeled::default(),
            scan_seconds: Histogram::new(&[1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0]),
            probe_seconds: Histogram::new(&[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0]),
            probes: Labeled::default(),
            health_transitions: Labeled::default(),
            leader: AtomicBool::new(false),
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP mirrorfleet_operator_reconciles_total Reconciles by kind.\n# TYPE mirrorfleet_operator_reconciles_total counter\n");
        self.reconciles
            .render(&mut out, "mirrorfleet_operator_reconciles_total", "kind");
        out.push_str("# HELP mirrorfleet_operator_reconcile_errors_total Reconcile errors by class.\n# TYPE mirrorfleet_operator_reconcile_errors_total counter\n");
        self.errors.render(
            &mut out,
            "mirrorfleet_operator_reconcile_errors_total",
            "error",
        );
        for (name, help, c) in [
            (
                "mirrorfleet_operator_fleet_writes_total",
                "Fleet state writes.",
                &self.fleet_writes,
            ),
            (
                "mirrorfleet_operator_status_writes_total",
                "Status subresource writes.",
                &self.status_writes,
            ),
            (
                "mirrorfleet_operator_scan_jobs_total",
                "Scan Jobs created.",
                &self.scan_jobs,
            ),
            (
                "mirrorfleet_operator_assessments_total",
                "Assessments of the whole fleet.",
                &self.assessments,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.get()
            );
        }
        self.scan_seconds.render(
            &mut out,
            "mirrorfleet_operator_scan_duration_seconds",
            "Scan durations.",
        );
        self.probe_seconds.render(
            &mut out,
            "mirrorfleet_operator_probe_duration_seconds",
            "Health probe durations.",
        );
        out.push_str("# HELP mirrorfleet_operator_api_requests_total Requests to the Kubernetes API server by verb.\n# TYPE mirrorfleet_operator_api_requests_total counter\n");
        self.api_requests
            .render(&mut out, "mirrorfleet_operator_api_requests_total", "verb");
        out.push_str("# HELP mirrorfleet_operator_api_requests_by_resource_total Requests to the Kubernetes API server by resource.\n# TYPE mirrorfleet_operator_api_requests_by_resource_total counter\n");
        self.api_requests_by_resource.render(
            &mut out,
            "mirrorfleet_operator_api_requests_by_resource_total",
            "resource",
        );
        out.push_str("# HELP mirrorfleet_operator_probes_total Probe outcomes.\n# TYPE mirrorfleet_operator_probes_total counter\n");
        self.probes
            .render(&mut out, "mirrorfleet_operator_probes_total", "outcome");
        out.push_str("# HELP mirrorfleet_operator_health_transitions_total Health verdicts that changed, by what they changed to.\n# TYPE mirrorfleet_operator_health_transitions_total counter\n");
        self.health_transitions.render(
            &mut out,
            "mirrorfleet_operator_health_transitions_total",
            "to",
        );
        let _ = writeln!(
            out,
            "# HELP mirrorfleet_operator_leader 1 on the replica that leads.\n# TYPE mirrorfleet_operator_leader gauge\nmirrorfleet_operator_leader {}",
            u8::from(self.leader.load(Ordering::Relaxed))
        );
        out
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "operator metrics and probes listening");
    }
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let metrics = metrics.clone();
                async move {
                    let (status, body) = match req.uri().path() {
                        "/metrics" => (StatusCode::OK, metrics.render()),
                        "/healthz" => (StatusCode::OK, "ok\n".to_owned()),
                        "/readyz" if metrics.ready.load(Ordering::Relaxed) => {
                            (StatusCode::OK, "ready\n".to_owned())
                        }
                        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned()),
                        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
                    };
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() = status;
                    Ok::<_, Infallible>(r)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
