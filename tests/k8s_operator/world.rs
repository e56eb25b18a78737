//! What the operator's end-to-end scenarios stand on: a real API server with the CRDs and the
//! operator's Roles bound to its ServiceAccount, Redis, the JobRunner running the scan Jobs
//! with the `mirrorfleet` binary, an rsync daemon serving the projects' source and nginx
//! mirrors serving copies of it; operator processes with their `/metrics`; waits that watch
//! an object instead of polling it, each with a deadline that names what it saw last.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Client, Resource};
use mirrorfleet_crds::v1alpha1::{Condition, ConditionStatus};
use mirrorfleet_testkit::kube::{ApiServer, JobRunner};
use mirrorfleet_testkit::{Redis, Server, free_port, nginx, rsync_daemon, write_tree};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const MIRRORFLEET: &str = env!("CARGO_BIN_EXE_mirrorfleet");

/// The namespace of the fleet, the operator, its Lease and its Jobs.
pub const NS: &str = "fleet";
/// The operator's ServiceAccount.
pub const SA: &str = "mirrorfleet-operator";
/// The project every fleet here carries.
pub const PROJECT: &str = "demo";

/// The files of the project's source (path, content), all with mtime [`MTIME`].
pub const FILES: [(&str, &[u8]); 3] = [
    ("common.iso", b"on every mirror"),
    ("only-full.iso", b"missing from the partial mirror"),
    ("docs/readme.txt", b"read me"),
];
/// The one file the partial mirror lacks.
pub const MISSING_FROM_PARTIAL: &str = "only-full.iso";
/// On a whole minute: nginx's autoindex shows minutes.
const MTIME: i64 = 1_795_309_320;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The real API server with mirrorfleet's CRDs Established, the namespace [`NS`], the
/// operator's Roles from charts/mirrorfleet/files/operator-role.yaml bound to the
/// ServiceAccount [`SA`], Redis, and a JobRunner running the operator's scan Jobs with the
/// `mirrorfleet` binary.
pub struct Cluster {
    pub api: ApiServer,
    /// The admin's client (the test's own reads and writes).
    pub client: Client,
    /// A kubeconfig holding only the operator ServiceAccount's token.
    pub operator_kubeconfig: PathBuf,
    pub redis: Redis,
    pub runner: JobRunner,
    /// Operator logs and manifests written by the test.
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts it all; `git_role` also binds `mirrorfleet-operator-git`.
    pub async fn start(git_role: bool) -> Cluster {
        let started = Instant::now();
        let api = ApiServer::start().await;
        eprintln!("kube-apiserver ready after {:?}", started.elapsed());
        let crds = run_mirrorfleet(&["crds"]).0;
        api.kubectl(&["apply", "-f", "-"], Some(&crds)).await;
        let established = api
            .kubectl(
                &[
                    "wait",
                    "--for=condition=Established",
                    "crd",
                    "--all",
                    "--timeout=30s",
                ],
                None,
            )
            .await;
        let ours = established
            .lines()
            .filter(|l| l.contains(".mirrorfleet.io condition met"))
            .count();
        assert_eq!(ours, 4, "the four CRDs Established: {established}");

        api.create_namespace(NS).await;
        let roles = repo_root().join("charts/mirrorfleet/files/operator-role.yaml");
        api.kubectl(&["apply", "-n", NS, "-f", roles.to_str().unwrap()], None)
            .await;
        let mut bindings = binding("mirrorfleet-operator");
        if git_role {
            bindings.push_str("---\n");
            bindings.push_str(&binding("mirrorfleet-operator-git"));
        }
        api.kubectl(&["apply", "-f", "-"], Some(&bindings)).await;
        let operator_kubeconfig = api.service_account_kubeconfig(NS, SA).await;

        let client = api.client().await;
        let runner = JobRunner::builder(client.clone(), NS, MIRRORFLEET)
            .selector("app.kubernetes.io/component=scan")
            .start();
        Cluster {
            api,
            client,
            operator_kubeconfig,
            redis: Redis::start(),
            runner,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.redis.port)
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), NS)
    }

    /// `kubectl apply -n NS -f -` of `yaml`, as the admin.
    pub async fn apply(&self, yaml: &str) -> String {
        self.api
            .kubectl(&["apply", "-n", NS, "-f", "-"], Some(yaml))
            .await
    }

    /// Whether the operator's ServiceAccount may `verb` `resource` (optionally its
    /// `subresource`) in `namespace`, as `kubectl auth can-i` says.
    pub async fn operator_may(
        &self,
        verb: &str,
        resource: &str,
        subresource: Option<&str>,
        namespace: &str,
    ) -> bool {
        let sub = subresource.map(|s| format!("--subresource={s}"));
        let mut args = vec!["auth", "can-i", verb, resource, "-n", namespace];
        args.extend(sub.as_deref());
        match self
            .api
            .kubectl_as(&self.operator_kubeconfig, &args, None)
            .await
        {
            Ok(out) if out.trim() == "yes" => true,
            Err(e) if e.code == Some(1) && e.stdout.trim() == "no" => false,
            other => panic!("kubectl {args:?} gave neither yes nor no: {other:?}"),
        }
    }
}

fn binding(role: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{ name: {role}, namespace: {NS} }}
roleRef: {{ apiGroup: rbac.authorization.k8s.io, kind: Role, name: {role} }}
subjects:
  - {{ kind: ServiceAccount, name: {SA}, namespace: {NS} }}
"
    )
}

/// Runs `mirrorfleet args…` to its end: (stdout, stderr, exit code).
pub fn run_mirrorfleet(args: &[&str]) -> (String, String, Option<i32>) {
    let out = Command::new(MIRRORFLEET).args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (text(&out.stdout), text(&out.stderr), out.status.code())
}

/// The project's upstream (an rsync daemon over the whole tree) and two nginx mirrors: one
/// holding all of it, one missing [`MISSING_FROM_PARTIAL`].
pub struct Trees {
    pub source: Server,
    pub full: Server,
    pub partial: Server,
    _root: tempfile::TempDir,
}

impl Trees {
    pub fn start() -> Trees {
        let root = mirrorfleet_testkit::world_readable_tempdir();
        let tree = |dir: &str, except: Option<&str>| {
            let files: Vec<(&str, &[u8], i64)> = FILES
                .iter()
                .filter(|(p, _)| Some(*p) != except)
                .map(|(p, c)| (*p, *c, MTIME))
                .collect();
            let path = root.path().join(dir);
            write_tree(&path, &files);
            path
        };
        let source = rsync_daemon(&[(PROJECT, &tree("source", None))]);
        let full = nginx(&tree("full", None));
        let partial = nginx(&tree("partial", Some(MISSING_FROM_PARTIAL)));
        Trees {
            source,
            full,
            partial,
            _root: root,
        }
    }

    pub fn rsync_url(&self) -> String {
        format!("rsync://127.0.0.1:{}/{PROJECT}/", self.source.port)
    }
}

/// The Project [`PROJECT`] indexed from `rsync_url`, with a fallback for files no mirror has.
pub fn project_yaml(rsync_url: &str) -> String {
    format!(
        "apiVersion: mirrorfleet.io/v1alpha1
kind: Project
metadata:
  name: {PROJECT}
spec:
  routing:
    pathPrefix: /{PROJECT}/
  source:
    rsync: {rsync_url}
  fallbacks:
    - url: {FALLBACK}
"
    )
}

/// The Project's fallback.
pub const FALLBACK: &str = "https://origin.example/demo/";

pub fn sponsor_yaml(name: &str) -> String {
    format!(
        "apiVersion: mirrorfleet.io/v1alpha1
kind: Sponsor
metadata:
  name: {name}
spec:
  displayName: Sponsor {name}
"
    )
}

/// A Mirror of [`PROJECT`] at `http://127.0.0.1:port/` in `country`, probed every second.
pub fn mirror_yaml(name: &str, sponsor: &str, country: &str, port: u16) -> String {
    format!(
        "apiVersion: mirrorfleet.io/v1alpha1
kind: Mirror
metadata:
  name: {name}
spec:
  sponsorRef: {sponsor}
  location: {{ country: {country} }}
  addressFamilies: [ipv4]
  healthCheck: {{ intervalSeconds: 1, timeoutSeconds: 1 }}
  projects:
    - project: {PROJECT}
      http: http://127.0.0.1:{port}/
"
    )
}

pub fn region_rule_yaml(name: &str, mirror: &str) -> String {
    format!(
        "apiVersion: mirrorfleet.io/v1alpha1
kind: RegionRule
metadata:
  name: {name}
spec:
  match: {{ continents: [EU] }}
  action: Scale
  weightFactor: 2.0
  mirrors: [{mirror}]
"
    )
}

/// Documents joined into one multi-document YAML.
pub fn documents(docs: &[String]) -> String {
    docs.join("---\n")
}

/// One `mirrorfleet operator` process, killed when dropped; its log goes to a file.
pub struct Operator {
    pub identity: String,
    pub metrics_port: u16,
    child: Child,
    log: PathBuf,
}

impl Operator {
    /// Starts a replica named `identity` as the operator's ServiceAccount, with `extra`
    /// arguments.
    pub fn start(cluster: &Cluster, identity: &str, extra: &[&str]) -> Operator {
        let metrics_port = free_port();
        let log = cluster.dir.path().join(format!("{identity}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(MIRRORFLEET)
            .args(["operator", "--namespace", NS, "--identity", identity])
            .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
            .arg(format!("--redis={}", cluster.redis_url()))
            .args(["--image=mirrorfleet:test", "--max-scans=4"])
            .arg("--scan-interval-minutes=60")
            .args(extra)
            .env("KUBECONFIG", &cluster.operator_kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env(
                "RUST_LOG",
                std::env::var("MIRRORFLEET_TEST_OPERATOR_LOG")
                    .unwrap_or_else(|_| "info,kube=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Operator {
            identity: identity.to_owned(),
            metrics_port,
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`TERM`, `KILL`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// Waits (up to `timeout`) for the process to exit; its status.
    pub async fn exited(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let what = format!("operator {} to exit", self.identity);
        mirrorfleet_testkit::wait_for(&what, timeout, || {
            let exited = self.child.try_wait().unwrap();
            async move { exited.ok_or_else(|| "still running".to_owned()) }
        })
        .await
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        self.tail(15)
    }

    fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Its `/metrics`: every `name{labels} value` and `name value` line.
    pub async fn metrics(&self) -> Result<Metrics, String> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
            .await
            .map_err(|e| format!("connecting to /metrics: {e}"))?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: operator\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut body = String::new();
        s.read_to_string(&mut body)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Metrics(
            body.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (k, v) = l.rsplit_once(' ')?;
                    Some((k.to_owned(), v.parse().ok()?))
                })
                .collect(),
        ))
    }

    /// Waits (up to `timeout`) until its `/metrics` says `mirrorfleet_operator_leader` is
    /// `leader` (0 or 1); returns how long that took.
    pub async fn wait_leader(&self, leader: f64, timeout: Duration) -> Duration {
        let start = Instant::now();
        let what = format!("operator {} to say leader={leader}", self.identity);
        mirrorfleet_testkit::wait_for(&what, timeout, || async {
            match self.metrics().await {
                Ok(m) if m.get("mirrorfleet_operator_leader") == leader => Ok(()),
                Ok(m) => Err(format!(
                    "leader={}; log:\n{}",
                    m.get("mirrorfleet_operator_leader"),
                    self.log_tail()
                )),
                Err(e) => Err(format!("{e}; log:\n{}", self.log_tail())),
            }
        })
        .await;
        start.elapsed()
    }
}

impl Drop for Operator {
    /// Kills it; when a test fails, shows the end of its log first.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- operator {} log (tail) ---\n{}",
                self.identity,
                self.tail(40)
            );
        }
    }
}

/// An operator's counters by their full name (`name{label="value"}`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics(pub BTreeMap<String, f64>);

impl Metrics {
    pub fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }

    /// API requests of `verb`, by the operator's own count.
    pub fn requests(&self, verb: &str) -> f64 {
        self.get(&format!(
            "mirrorfleet_operator_api_requests_total{{verb=\"{verb}\"}}"
        ))
    }

    /// API requests of every verb, less the leader election's: each renewal of the Lease is
    /// a `get` and an `update` (nothing else the operator does is an `update`).
    pub fn requests_but_lease(&self) -> f64 {
        let all: f64 = self
            .0
            .iter()
            .filter(|(k, _)| k.starts_with("mirrorfleet_operator_api_requests_total{"))
            .map(|(_, v)| v)
            .sum();
        all - 2.0 * self.requests("update")
    }

    /// What changes the cluster: status writes, and creates, patches and deletes.
    pub fn writes(&self) -> [(&'static str, f64); 4] {
        [
            (
                "status writes",
                self.get("mirrorfleet_operator_status_writes_total"),
            ),
            ("create", self.requests("create")),
            ("patch", self.requests("patch")),
            ("delete", self.requests("delete")),
        ]
    }

    /// The requests by verb, for messages.
    pub fn by_verb(&self) -> String {
        let verbs: Vec<String> = self
            .0
            .iter()
            .filter_map(|(k, v)| {
                let verb = k.strip_prefix("mirrorfleet_operator_api_requests_total{verb=\"")?;
                Some(format!("{}={v}", verb.trim_end_matches("\"}")))
            })
            .collect();
        verbs.join(" ")
    }
}

/// Waits until the operator's requests (less the Lease's) have not moved for `quiet`; panics
/// after `timeout` saying how they kept moving. Returns the counters then.
pub async fn settled(op: &Operator, quiet: Duration, timeout: Duration) -> Metrics {
    let start = Instant::now();
    let mut last = op.metrics().await.unwrap();
    let mut since = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let now = op.metrics().await.unwrap();
        if now.requests_but_lease() != last.requests_but_lease() {
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return now;
        }
        assert!(
            start.elapsed() < timeout,
            "the operator's requests did not stay still for {quiet:?} within {timeout:?}: \
             {} then {}",
            last.by_verb(),
            now.by_verb()
        );
        last = now;
    }
}

/// Watches the object `name` of `api` until `check` gives `Ok` (checked on the object as it
/// is, then on every change: no polling); returns that value. After `timeout`, panics naming
/// `what` and the last `Err` (what was seen instead).
pub async fn watch_until<K, T>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&K) -> Result<T, String>,
) -> T
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default + Clone + Eq + std::hash::Hash,
{
    let start = Instant::now();
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut changes = watcher(api.clone(), config)
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut seen = "nothing (no such object yet)".to_owned();
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, changes.next()).await {
            Ok(Some(Ok(obj))) => match check(&obj) {
                Ok(v) => return v,
                Err(e) => seen = e,
            },
            Ok(Some(Err(e))) => seen = format!("watch error: {e}"),
            Ok(None) => panic!("the watch of {name} ended while waiting for {what}"),
            Err(_) => panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen}"),
        }
    }
}

/// The condition `type_` among `conditions`, if it is `status` at `generation`; else what
/// the conditions are.
pub fn condition<'a>(
    conditions: &'a [Condition],
    type_: &str,
    status: ConditionStatus,
    generation: Option<i64>,
) -> Result<&'a Condition, String> {
    match conditions.iter().find(|c| c.type_ == type_) {
        Some(c) if c.status == status && c.observed_generation == generation => Ok(c),
        _ => Err(format!(
            "{type_} is not {status:?} at generation {generation:?}; conditions: {}",
            serde_json::to_string(conditions).unwrap()
        )),
    }
}

/// The `Location` a redirector on 127.0.0.1:`port` answers for `path`, or what it answered
/// instead.
pub async fn location(port: u16, path: &str) -> Result<String, String> {
    let answer = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let answer = tokio::time::timeout(Duration::from_secs(2), answer)
        .await
        .map_err(|_| format!("no answer for {path} within 2 s"))?
        .map_err(|e| format!("GET {path}: {e}"))?;
    answer
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("location")
                .then(|| value.trim().to_owned())
        })
        .ok_or_else(|| {
            let status = answer.lines().next().unwrap_or("nothing");
            format!("GET {path}: {status}, no Location")
        })
}

/// Waits (up to `timeout`) until the redirector on 127.0.0.1:`port` sends `path` to `want`.
pub async fn until_redirected(port: u16, path: &str, want: &str, timeout: Duration) {
    let what = format!("the redirector to send {path} to {want}");
    mirrorfleet_testkit::wait_for(&what, timeout, || async {
        match location(port, path).await {
            Ok(l) if l == want => Ok(()),
            Ok(l) => Err(format!("{path} -> {l}")),
            Err(e) => Err(e),
        }
    })
    .await;
}

/// `mirrorfleet-redirector`'s server, in-process on a free loopback port, following the
/// store at `redis_url`; stops when dropped.
pub struct Redirector {
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Redirector {
    pub async fn start(redis_url: &str) -> Redirector {
        let store = mirrorfleet_store::open_store(Some(redis_url), &[], None, None)
            .await
            .unwrap()
            .unwrap();
        let geo = mirrorfleet_geo::Geo::open(None, None).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            mirrorfleet_redirector::server::run(
                vec![listener],
                store,
                geo,
                mirrorfleet_redirector::server::Config::default(),
                async {
                    let _ = stopped.await;
                },
            )
            .await;
        });
        Redirector {
            port,
            stop: Some(stop),
            task,
        }
    }

    /// Stops it: drains and flushes, then returns.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = &mut self.task;
        mirrorfleet_testkit::within("the redirector to stop", Duration::from_secs(10), task)
            .await
            .unwrap();
    }
}

impl Drop for Redirector {
    fn drop(&mut self) {
        self.task.abort();
    }
}
