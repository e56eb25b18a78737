//! `scripts/bench-operator`: the operator at scale on a real kube-apiserver + etcd (built by
//! `scripts/k8s-bins`), with a real Redis. 1,000 Mirrors across 50 Projects and 20 Sponsors
//! are created at once (as a Git sync or `kubectl apply --server-side` would, 32 requests in
//! flight), then it measures:
//! - `ready_s`: seconds from the first create until every Mirror is `Ready=True` at its
//!   current generation and every Project and Sponsor has a status;
//! - `requests_per_edit`: API requests the operator makes (its own count,
//!   `mirrorfleet_operator_api_requests_by_resource_total`, every resource but the Lease) for
//!   one edit of one Mirror's spec, until it has applied the new status and is quiet again;
//! - `quiet_writes`: status writes plus create, patch and delete requests during a quiet
//!   minute (the Lease's renewals, `update`s, are the election's and not counted);
//! - `rss_mib`: the operator's peak resident memory (VmHWM).
//!
//! Health checks are off in these Mirrors (no servers behind 1,000 URLs) and no kubelet runs
//! the scan Jobs: the scheduler creates its cap of source-indexing Jobs, which never finish,
//! before the measures start. Last line: `bench-operator mirrors=… ready_s=… …`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use mirrorfleet_crds::v1alpha1::Mirror;
use mirrorfleet_testkit::kube::ApiServer;
use mirrorfleet_testkit::{KillOnDrop, Redis, free_port};
use serde_json::{Value, json};

const NS: &str = "bench";
const MIRRORS: usize = 1000;
const PROJECTS: usize = 50;
const SPONSORS: usize = 20;
const MAX_SCANS: u64 = 4;

fn objects() -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    for p in 0..PROJECTS {
        out.push((
            "projects",
            json!({"apiVersion": "mirrorfleet.io/v1alpha1", "kind": "Project",
                   "metadata": {"name": format!("p{p:02}")},
                   "spec": {"routing": {"pathPrefix": format!("/p{p:02}/")},
                            "source": {"http": format!("http://origin.invalid/p{p:02}/")}}}),
        ));
    }
    for s in 0..SPONSORS {
        out.push((
            "sponsors",
            json!({"apiVersion": "mirrorfleet.io/v1alpha1", "kind": "Sponsor",
                   "metadata": {"name": format!("s{s:02}")},
                   "spec": {"displayName": format!("Sponsor {s}")}}),
        ));
    }
    let countries = ["FR", "DE", "US", "BR", "JP", "ZA", "AU", "IN", "SE", "CA"];
    for m in 0..MIRRORS {
        let projects: Vec<Value> = [m % PROJECTS, (m * 7 + 3) % PROJECTS]
            .iter()
            .map(|p| json!({"project": format!("p{p:02}"), "https": format!("https://m{m:04}.example/p{p:02}/")}))
            .collect();
        out.push((
            "mirrors",
            json!({"apiVersion": "mirrorfleet.io/v1alpha1", "kind": "Mirror",
                   "metadata": {"name": format!("m{m:04}")},
                   "spec": {"sponsorRef": format!("s{:02}", m % SPONSORS),
                            "location": {"country": countries[m % countries.len()]},
                            "healthCheck": {"disabled": true},
                            "projects": projects}}),
        ));
    }
    out
}

fn resource(plural: &str) -> ApiResource {
    let kind = match plural {
        "projects" => "Project",
        "sponsors" => "Sponsor",
        _ => "Mirror",
    };
    ApiResource {
        group: "mirrorfleet.io".into(),
        version: "v1alpha1".into(),
        api_version: "mirrorfleet.io/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// The operator's counters: every `name{label="value"} n` and `name n` line.
async fn metrics(port: u16) -> BTreeMap<String, f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: operator\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn sum(m: &BTreeMap<String, f64>, prefix: &str, except: &[&str]) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix) && !except.iter().any(|e| k.contains(e)))
        .map(|(_, v)| v)
        .sum()
}

/// Every request but the Lease's (the election's, every 5 s whatever the fleet does).
fn requests(m: &BTreeMap<String, f64>) -> f64 {
    sum(
        m,
        "mirrorfleet_operator_api_requests_by_resource_total",
        &["\"leases\""],
    )
}

fn writes(m: &BTreeMap<String, f64>) -> f64 {
    ["create", "patch", "delete"]
        .iter()
        .map(|v| {
            m.get(&format!(
                "mirrorfleet_operator_api_requests_total{{verb=\"{v}\"}}"
            ))
            .copied()
            .unwrap_or(0.0)
        })
        .sum()
}

/// Waits until `f` holds, polling every 100 ms; panics after `limit`.
async fn until<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the operator's request count has not moved for `quiet`.
async fn settled(port: u16, quiet: Duration) -> f64 {
    let mut last = requests(&metrics(port).await);
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = requests(&metrics(port).await);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= quiet {
            return now;
        }
    }
}

fn ready_now(o: &Value) -> bool {
    let generation = &o["metadata"]["generation"];
    o["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter().any(|c| {
            c["type"] == "Ready" && c["status"] == "True" && &c["observedGeneration"] == generation
        })
    })
}

fn rss_peak_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = ApiServer::start().await;
    let crds = mirrorfleet_crds::v1alpha1::crds_yaml();
    api.kubectl(&["apply", "-f", "-"], Some(&crds)).await;
    api.kubectl(
        &[
            "wait",
            "--for",
            "condition=established",
            "crd",
            "--all",
            "--timeout=60s",
        ],
        None,
    )
    .await;
    api.create_namespace(NS).await;
    let redis = Redis::start();
    let client = api.client().await;

    let metrics_port = free_port();
    let operator = Command::new(env!("CARGO_BIN_EXE_mirrorfleet"))
        .args(["operator", "--namespace", NS, "--identity", "bench"])
        .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
        .arg(format!("--redis=redis://127.0.0.1:{}/0", redis.port))
        .arg(format!("--max-scans={MAX_SCANS}"))
        .arg("--image=mirrorfleet:bench")
        .env("KUBECONFIG", api.admin_kubeconfig())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = operator.id();
    let _operator = KillOnDrop(operator);
    until("the operator leads", Duration::from_secs(60), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", metrics_port))
            .await
            .is_ok()
            && metrics(metrics_port)
                .await
                .get("mirrorfleet_operator_leader")
                == Some(&1.0)
    })
    .await;

    let start = Instant::now();
    let client_ref = &client;
    futures_util::stream::iter(objects())
        .for_each_concurrent(32, |(plural, o)| async move {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client_ref.clone(), NS, &resource(plural));
            let o: DynamicObject = serde_json::from_value(o).unwrap();
            api.create(&PostParams::default(), &o).await.unwrap();
        })
        .await;
    let applied_s = start.elapsed().as_secs_f64();
    let lists: Vec<Api<DynamicObject>> = ["mirrors", "projects", "sponsors"]
        .iter()
        .map(|p| Api::namespaced_with(client.clone(), NS, &resource(p)))
        .collect();
    let lists = Arc::new(lists);
    until("every object ready", Duration::from_secs(300), || {
        let lists = lists.clone();
        async move {
            for (i, api) in lists.iter().enumerate() {
                let items = api.list(&ListParams::default()).await.unwrap().items;
                let values = items.iter().map(|o| serde_json::to_value(o).unwrap());
                let ready = values.filter(ready_now).count();
                let want = [MIRRORS, PROJECTS, SPONSORS][i];
                if ready < want {
                    return false;
                }
            }
            true
        }
    })
    .await;
    let ready_s = start.elapsed().as_secs_f64();
    eprintln!("created in {applied_s:.1} s, all ready after {ready_s:.1} s");

    // The scheduler's Jobs first (its cap of source scans, which never finish here).
    until(
        "the scan Jobs at the cap",
        Duration::from_secs(60),
        || async {
            metrics(metrics_port)
                .await
                .get("mirrorfleet_operator_scan_jobs_total")
                == Some(&(MAX_SCANS as f64))
        },
    )
    .await;
    let before = settled(metrics_port, Duration::from_secs(3)).await;

    let mirrors: Api<Mirror> = Api::namespaced(client.clone(), NS);
    let edited = "m0042";
    let patch = json!({"spec": {"weight": 250}});
    let generation = mirrors
        .patch(edited, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap()
        .metadata
        .generation;
    until("the edit reconciled", Duration::from_secs(30), || async {
        let m = mirrors.get(edited).await.unwrap();
        m.status.and_then(|s| s.observed_generation) == generation
    })
    .await;
    let after = settled(metrics_port, Duration::from_secs(3)).await;
    let requests_per_edit = after - before;

    let m0 = metrics(metrics_port).await;
    let quiet_from = writes(&m0) + m0["mirrorfleet_operator_status_writes_total"];
    tokio::time::sleep(Duration::from_secs(60)).await;
    let m1 = metrics(metrics_port).await;
    let quiet_writes = writes(&m1) + m1["mirrorfleet_operator_status_writes_total"] - quiet_from;
    let rss_mib = rss_peak_mib(pid);
    let assessments = m1["mirrorfleet_operator_assessments_total"];
    let of = |prefix: &str| {
        m1.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| format!("{} {v}", k.trim_start_matches(prefix)))
            .collect::<Vec<_>>()
    };
    eprintln!(
        "assessments: {assessments}; requests by verb: {:?}; by resource: {:?}",
        of("mirrorfleet_operator_api_requests_total"),
        of("mirrorfleet_operator_api_requests_by_resource_total")
    );
    println!(
        "bench-operator mirrors={MIRRORS} ready_s={ready_s:.1} requests_per_edit={requests_per_edit} quiet_writes={quiet_writes} rss_mib={rss_mib:.0}"
    );
    drop(redis);
}
