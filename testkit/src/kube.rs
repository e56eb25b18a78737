//! [`ApiServer`]: a real Kubernetes API server for tests — etcd and kube-apiserver v1.35.4
//! on free loopback ports, with RBAC, client-certificate and service-account-token
//! authentication — and [`JobRunner`], which stands in for the kubelet and the job
//! controller so that Jobs created by the code under test really run.
//!
//! There is no kubelet, scheduler or controller-manager: Pods are never run, namespaces get
//! no `default` ServiceAccount, nothing garbage-collects. What a controller-manager would do
//! for a test, the test (or [`JobRunner`]) does in the open.
//!
//! The binaries come from `scripts/k8s-bins` (built with Go from `tests/k8s/go.mod`):
//! `$MIRRORFLEET_K8S_BIN`, or the directory that script computes. Everything is test-only:
//! a missing binary or a server that does not come up is a panic naming what to do.

mod job_runner;

pub use job_runner::{JobRunner, JobRunnerBuilder, Run};

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::{KillOnDrop, Tls, free_port, openssl, tls_for_loopback};

/// How long [`ApiServer::start`] waits for `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The directory holding `kube-apiserver`, `kubectl` and `etcd`: `$MIRRORFLEET_K8S_BIN`, or
/// `${MIRRORFLEET_TOOLS:-/var/tmp/mirrorfleet-tools}/k8s/<hash>/` where `<hash>` is the first
/// 12 hex digits of the SHA-256 of `tests/k8s/go.mod` followed by `go.sum` — the directory
/// `scripts/k8s-bins` builds into. Panics, saying to run that script, when a binary is
/// missing.
pub fn k8s_bin_dir() -> PathBuf {
    let dir = match std::env::var_os("MIRRORFLEET_K8S_BIN") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let pins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/k8s");
            let mut hasher = Sha256::new();
            for file in ["go.mod", "go.sum"] {
                let path = pins.join(file);
                let bytes = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                hasher.update(bytes);
            }
            let hash: String = hasher.finalize()[..6]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let tools = std::env::var_os("MIRRORFLEET_TOOLS")
                .unwrap_or_else(|| "/var/tmp/mirrorfleet-tools".into());
            Path::new(&tools).join("k8s").join(hash)
        }
    };
    for bin in ["kube-apiserver", "kubectl", "etcd"] {
        assert!(
            dir.join(bin).is_file(),
            "{} is missing: run scripts/k8s-bins (it builds kube-apiserver, kubectl and etcd \
             from tests/k8s/go.mod, about 6 minutes the first time) or point \
             MIRRORFLEET_K8S_BIN at a directory holding them",
            dir.join(bin).display()
        );
    }
    dir
}

/// etcd and kube-apiserver on free 127.0.0.1 ports, both killed when this is dropped.
///
/// The API server authenticates client certificates signed by its own CA (the admin is
/// `O=system:masters`) and service-account tokens (`kubectl create token`), and authorizes
/// with RBAC only. Its data and logs live in a temporary directory removed on drop.
#[derive(Debug)]
pub struct ApiServer {
    url: String,
    kubectl: PathBuf,
    admin_kubeconfig: PathBuf,
    tls: Tls,
    // Fields drop in order: the API server goes before etcd, the directory last.
    apiserver: KillOnDrop,
    etcd: KillOnDrop,
    dir: tempfile::TempDir,
}

impl ApiServer {
    /// Starts etcd and kube-apiserver and waits (up to 60 s) until `/readyz` passes.
    /// Async because it polls through a `kube::Client`; the processes are started with
    /// blocking calls, which take milliseconds.
    pub async fn start() -> ApiServer {
        let bin = k8s_bin_dir();
        let dir = tempfile::tempdir().unwrap();
        let path = |f: &str| dir.path().join(f);

        let tls = tls_for_loopback("mirrorfleet test cluster CA");
        let (admin_cert, admin_key) = tls.client_cert("admin", "/CN=admin/O=system:masters");
        openssl(
            dir.path(),
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "service-accounts.key",
            ],
        );
        openssl(
            dir.path(),
            &[
                "pkey",
                "-in",
                "service-accounts.key",
                "-pubout",
                "-out",
                "service-accounts.pub",
            ],
        );

        let (client_port, peer_port) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = KillOnDrop(spawn_logged(
            Command::new(bin.join("etcd"))
                .arg("--name=test")
                .arg(format!("--data-dir={}", path("etcd").display()))
                .arg(format!("--listen-client-urls={client_url}"))
                .arg(format!("--advertise-client-urls={client_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=test={peer_url}"))
                .arg("--unsafe-no-fsync")
                .arg("--log-level=warn"),
            &path("etcd.log"),
        ));
        wait_listening(&mut etcd.0, client_port, &path("etcd.log"), "etcd");

        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let apiserver = KillOnDrop(spawn_logged(
            Command::new(bin.join("kube-apiserver"))
                .arg(format!("--etcd-servers={client_url}"))
                .arg("--bind-address=127.0.0.1")
                .arg("--advertise-address=127.0.0.1")
                .arg(format!("--secure-port={port}"))
                .arg(format!("--cert-dir={}", path("apiserver-certs").display()))
                .arg(flag("--tls-cert-file", &tls.cert))
                .arg(flag("--tls-private-key-file", &tls.key))
                .arg(flag("--client-ca-file", &tls.ca))
                .arg("--authorization-mode=RBAC")
                .arg("--service-cluster-ip-range=10.96.0.0/16")
                .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
                .arg(flag(
                    "--service-account-key-file",
                    &path("service-accounts.pub"),
                ))
                .arg(flag(
                    "--service-account-signing-key-file",
                    &path("service-accounts.key"),
                ))
                // Its endpoint reconciler would publish 127.0.0.1 as the `kubernetes`
                // Service's endpoint, which validation refuses (loopback), every 10 s.
                .arg("--endpoint-reconciler-type=none")
                .arg("--profiling=false"),
            &path("kube-apiserver.log"),
        ));

        let admin_kubeconfig = path("admin.kubeconfig");
        write_kubeconfig(
            &admin_kubeconfig,
            &url,
            &tls.ca,
            &format!(
                "client-certificate: {}\n    client-key: {}",
                admin_cert.display(),
                admin_key.display()
            ),
        );
        let mut server = ApiServer {
            url,
            kubectl: bin.join("kubectl"),
            admin_kubeconfig,
            tls,
            apiserver,
            etcd,
            dir,
        };
        server.wait_ready().await;
        server
    }

    /// Polls `/readyz` until every check passes; panics with the logs' tails when the API
    /// server exits or the deadline passes.
    async fn wait_ready(&mut self) {
        let client = self.client().await;
        let start = Instant::now();
        loop {
            let exited = [
                ("kube-apiserver", &mut self.apiserver),
                ("etcd", &mut self.etcd),
            ]
            .into_iter()
            .find_map(|(what, p)| Some((what, p.0.try_wait().ok()??)));
            if let Some((what, status)) = exited {
                panic!(
                    "{what} exited ({status}) before the API server was ready\n{}",
                    self.log_tails()
                );
            }
            let readyz = http::Request::get("/readyz?verbose")
                .body(Vec::new())
                .unwrap();
            let seen = match client.request_text(readyz).await {
                Ok(body) if body.lines().last() == Some("readyz check passed") => return,
                Ok(body) => body,
                Err(e) => e.to_string(),
            };
            assert!(
                start.elapsed() < READY_TIMEOUT,
                "kube-apiserver not ready after {READY_TIMEOUT:?}; /readyz said: {seen}\n{}",
                self.log_tails()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CA that signed the serving certificate and the client certificates.
    pub fn ca(&self) -> &Path {
        &self.tls.ca
    }

    /// A kubeconfig for the cluster admin (a client certificate in `system:masters`).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// A client acting as the cluster admin, built from [`Self::admin_kubeconfig`].
    pub async fn client(&self) -> kube::Client {
        client_from(&self.admin_kubeconfig).await
    }

    /// The last lines of etcd's and kube-apiserver's logs, for failure messages.
    pub fn log_tails(&self) -> String {
        let tail = |name: &str| {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        format!(
            "--- kube-apiserver.log (tail) ---\n{}\n--- etcd.log (tail) ---\n{}",
            tail("kube-apiserver.log"),
            tail("etcd.log")
        )
    }

    /// Runs kubectl as the admin with `args` (and `stdin` piped in) and returns its stdout;
    /// panics with its stderr when it fails.
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        self.try_kubectl(args, stdin)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::kubectl`] that returns a failure instead of panicking.
    pub async fn try_kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String, Kubectl> {
        self.kubectl_as(&self.admin_kubeconfig, args, stdin).await
    }

    /// Runs kubectl with `kubeconfig` (e.g. a service account's), returning its stdout, or
    /// how it failed.
    pub async fn kubectl_as(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, Kubectl> {
        let mut cmd = tokio::process::Command::new(&self.kubectl);
        cmd.arg(flag("--kubeconfig", kubeconfig))
            .arg(flag("--cache-dir", &self.dir.path().join("kubectl-cache")))
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input.as_bytes()).await.unwrap();
        }
        let out = child.wait_with_output().await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(Kubectl {
                args: args.iter().map(|a| a.to_string()).collect(),
                code: out.status.code(),
                stdout,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
    }

    /// Creates the namespace `name`.
    pub async fn create_namespace(&self, name: &str) {
        self.kubectl(&["create", "namespace", name], None).await;
    }

    /// A kubeconfig that holds only a token of the ServiceAccount `namespace/sa` (from the
    /// TokenRequest API, valid for two hours) and the cluster's CA; creates the ServiceAccount
    /// if it does not exist. What it may do is what RBAC grants that ServiceAccount.
    pub async fn service_account_kubeconfig(&self, namespace: &str, sa: &str) -> PathBuf {
        if let Err(e) = self
            .try_kubectl(&["create", "serviceaccount", sa, "-n", namespace], None)
            .await
            && !e.stderr.contains("already exists")
        {
            panic!("{e}");
        }
        let token = self
            .kubectl(
                &["create", "token", sa, "-n", namespace, "--duration=2h"],
                None,
            )
            .await;
        let path = self
            .dir
            .path()
            .join(format!("sa-{namespace}-{sa}.kubeconfig"));
        write_kubeconfig(
            &path,
            &self.url,
            &self.tls.ca,
            &format!("token: {}", token.trim()),
        );
        path
    }

    /// Whether `kubectl auth can-i verb resource -n namespace` says yes for whoever
    /// `kubeconfig` authenticates as.
    pub async fn can_i(
        &self,
        kubeconfig: &Path,
        verb: &str,
        resource: &str,
        namespace: &str,
    ) -> bool {
        let args = ["auth", "can-i", verb, resource, "-n", namespace];
        match self.kubectl_as(kubeconfig, &args, None).await {
            Ok(out) if out.trim() == "yes" => true,
            Err(e) if e.code == Some(1) && e.stdout.trim() == "no" => false,
            other => panic!("kubectl auth can-i gave neither yes nor no: {other:?}"),
        }
    }
}

/// A kubectl run that failed: its arguments, exit code and output.
#[derive(Debug)]
pub struct Kubectl {
    pub args: Vec<String>,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Kubectl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kubectl {} exited with {:?}\nstdout: {}\nstderr: {}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }
}

impl std::error::Error for Kubectl {}

/// A client built from the kubeconfig at `path`, as `KUBECONFIG=path` would give it.
pub async fn client_from(path: &Path) -> kube::Client {
    // One crypto provider for the whole test binary, whatever other crates enable.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("reading kubeconfig {}: {e}", path.display()));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", path.display()));
    kube::Client::try_from(config).unwrap()
}

/// `--name=path`.
fn flag(name: &str, path: &Path) -> std::ffi::OsString {
    let mut arg = std::ffi::OsString::from(name);
    arg.push("=");
    arg.push(OsStr::new(path));
    arg
}

/// Spawns `cmd` with its stdout and stderr appended to `log`.
fn spawn_logged(cmd: &mut Command, log: &Path) -> std::process::Child {
    let file = std::fs::File::create(log).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {:?}: {e}", cmd.get_program()))
}

/// Waits (up to 10 s) until `child` accepts connections on 127.0.0.1:`port`; panics with
/// the tail of `log` when it exits first or the deadline passes.
fn wait_listening(child: &mut std::process::Child, port: u16, log: &Path, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        let exited = child.try_wait().unwrap();
        if exited.is_some() || start.elapsed() > Duration::from_secs(10) {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} is not listening on port {port} (exit: {exited:?}); its log:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes a kubeconfig for `url` trusting `ca` with the user lines `user` (indented as the
/// `user:` mapping's body).
fn write_kubeconfig(path: &Path, url: &str, ca: &Path, user: &str) {
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {url}
    certificate-authority: {ca}
users:
- name: user
  user:
    {user}
contexts:
- name: test
  context:
    cluster: test
    user: user
current-context: test
",
        ca = ca.display()
    );
    std::fs::write(path, text).unwrap();
}
