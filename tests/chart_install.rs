//! `helm install`, `helm upgrade` and `helm uninstall` of charts/mirrorfleet on a real
//! kube-apiserver (testkit's `kube` feature; no kubelet, so no pod runs): the objects the
//! chart creates, and the operator run out of cluster with the arguments of the chart's
//! Deployment and the token of the chart's ServiceAccount doing its whole job — Lease,
//! statuses, scan Jobs (run by the JobRunner), health, Events — and being refused what it
//! must not do; the redirector started with the chart's arguments becoming ready on the
//! state the operator wrote. Then an upgrade (a new image tag, changed values) and an
//! uninstall. Every helm command and its output is printed (`--nocapture` shows them).
//!
//! Needs helm (scripts/helm-bin) and the binaries of scripts/k8s-bins, redis-server, rsync
//! and nginx; scripts/test provides them all and runs this with `--ignored --nocapture`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[path = "chart/tools.rs"]
#[allow(dead_code)] // the rendering helpers tests/chart.rs uses
mod tools;
#[path = "k8s_operator/world.rs"]
#[allow(dead_code)] // the helpers the operator's tests use and these do not
mod world;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use mirrorfleet_crds::v1alpha1::{
    Condition, ConditionStatus, Mirror, Project, RegionRule, Sponsor,
};
use mirrorfleet_testkit::kube::{ApiServer, JobRunner};
use mirrorfleet_testkit::{Redis, free_port, wait_for};
use serde_json::Value;
use tools::{args, chart_dir, container, helm, run_logged};
use world::{
    MIRRORFLEET, NS, PROJECT, Trees, condition, documents as join, mirror_yaml, project_yaml,
    region_rule_yaml, sponsor_yaml, watch_until,
};

const RELEASE: &str = "mirrorfleet";
const DEADLINE: Duration = Duration::from_secs(60);

/// The conditions and generation of the kinds waited on here.
trait Conditioned {
    fn conditions(&self) -> &[Condition];
    fn generation(&self) -> Option<i64>;
}

macro_rules! conditioned {
    ($($kind:ty),*) => {$(
        impl Conditioned for $kind {
            fn conditions(&self) -> &[Condition] {
                self.status.as_ref().map_or(&[], |s| &s.conditions)
            }
            fn generation(&self) -> Option<i64> {
                self.metadata.generation
            }
        }
    )*};
}
conditioned!(Project, Mirror, Sponsor, RegionRule);

/// A process killed when dropped, whose log tail is shown when the test fails.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn start(cmd: &mut Command, log: &Path) -> Process {
        let file = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Process {
            child,
            log: log.to_owned(),
        }
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} (tail) ---\n{}", self.log.display(), self.tail());
        }
    }
}

/// The body of `GET path` on 127.0.0.1:port, with its status code.
async fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .await
        .map_err(|e| e.to_string())?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

/// `kubectl get KIND NAME -n NS -o json` as the admin.
async fn get_json(api: &ApiServer, kind: &str, name: &str) -> Value {
    serde_json::from_str(
        &api.kubectl(&["get", kind, name, "-n", NS, "-o", "json"], None)
            .await,
    )
    .unwrap()
}

/// The names of the chart's objects of `kind` in the namespace.
async fn names(api: &ApiServer, kind: &str) -> Vec<String> {
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    let out = api
        .kubectl(
            &["get", kind, "-n", NS, "-l", &selector, "-o", "name"],
            None,
        )
        .await;
    out.lines()
        .map(|l| l.rsplit('/').next().unwrap().to_owned())
        .collect()
}

/// `args` with each flag in `replace` (`--name=`) given the new value instead.
fn replaced(args: &[String], replace: &[(&str, String)]) -> Vec<String> {
    args.iter()
        .map(|a| {
            replace
                .iter()
                .find(|(flag, _)| a.starts_with(flag))
                .map_or_else(|| a.clone(), |(flag, v)| format!("{flag}{v}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs helm and the real API server: scripts/test builds them and runs this tier"]
async fn helm_installs_upgrades_and_uninstalls_the_chart_and_the_operator_works_under_it() {
    let started = Instant::now();
    let api = ApiServer::start().await;
    api.create_namespace(NS).await;
    let home = tempfile::tempdir().unwrap();
    let kubeconfig = api.admin_kubeconfig().to_owned();
    let helm_cmd = || helm(home.path(), Some(&kubeconfig));

    // Install with the defaults.
    let out = run_logged(
        helm_cmd()
            .args(["install", RELEASE])
            .arg(chart_dir())
            .args(["--namespace", NS]),
    );
    assert!(out.status.success(), "helm install");
    let notes = String::from_utf8_lossy(&out.stdout);
    assert!(notes.contains("STATUS: deployed"), "{notes}");
    assert!(
        notes.contains("kubectl -n fleet apply -f fleet/"),
        "NOTES.txt: {notes}"
    );
    eprintln!("helm install done {:?} after the start", started.elapsed());

    // The CRDs from the chart's crds/, Established.
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
    assert_eq!(
        established.matches(".mirrorfleet.io condition met").count(),
        4,
        "{established}"
    );
    // What the chart created.
    for (kind, want) in [
        (
            "deployments",
            vec!["mirrorfleet-operator", "mirrorfleet-redirector"],
        ),
        ("statefulsets", vec!["mirrorfleet-redis"]),
        (
            "serviceaccounts",
            vec!["mirrorfleet-operator", "mirrorfleet-redirector"],
        ),
        ("roles", vec!["mirrorfleet-operator"]),
        ("rolebindings", vec!["mirrorfleet-operator"]),
        ("horizontalpodautoscalers", vec!["mirrorfleet-redirector"]),
        ("poddisruptionbudgets", vec!["mirrorfleet-redirector"]),
        (
            "configmaps",
            vec!["mirrorfleet-dashboard", "mirrorfleet-redis-scripts"],
        ),
        (
            "networkpolicies",
            vec![
                "mirrorfleet-operator",
                "mirrorfleet-redirector",
                "mirrorfleet-redis",
                "mirrorfleet-scan",
            ],
        ),
    ] {
        let mut have = names(&api, kind).await;
        have.sort();
        assert_eq!(have, want, "{kind}");
    }
    let mut services = names(&api, "services").await;
    services.sort();
    assert_eq!(
        services,
        [
            "mirrorfleet-operator-metrics",
            "mirrorfleet-redirector",
            "mirrorfleet-redis",
            "mirrorfleet-redis-headless"
        ]
    );
    let role = get_json(&api, "role", "mirrorfleet-operator").await;
    let file = std::fs::read_to_string(chart_dir().join("files/operator-role.yaml")).unwrap();
    let roles = tools::documents(&file);
    assert_eq!(
        role["rules"],
        tools::object(&roles, "Role", "mirrorfleet-operator")["rules"],
        "the API server holds files/operator-role.yaml's rules"
    );

    // The operator, as the chart runs it: its Deployment's arguments (the store and the
    // metrics address pointed at this test's), its ServiceAccount's token.
    let deployment = get_json(&api, "deployment", "mirrorfleet-operator").await;
    let pod = &deployment["spec"]["template"]["spec"];
    let sa = pod["serviceAccountName"].as_str().unwrap().to_owned();
    assert_eq!(sa, "mirrorfleet-operator");
    let operator_args = args(container(&deployment, "operator"));
    let redis = Redis::start();
    let redis_url = format!("redis://127.0.0.1:{}/0", redis.port);
    let metrics_port = free_port();
    let run_args = replaced(
        &operator_args,
        &[
            ("--redis=", redis_url.clone()),
            ("--metrics-addr=", format!("127.0.0.1:{metrics_port}")),
        ],
    );
    assert_ne!(
        run_args, operator_args,
        "the store and address were replaced"
    );
    let token = api.service_account_kubeconfig(NS, &sa).await;
    let dir = tempfile::tempdir().unwrap();
    let client = api.client().await;
    let runner = JobRunner::builder(client.clone(), NS, MIRRORFLEET)
        .selector("app.kubernetes.io/component=scan")
        .start();
    let trees = Trees::start();
    eprintln!("$ mirrorfleet {}", run_args.join(" "));
    let operator = Process::start(
        Command::new(MIRRORFLEET)
            .args(&run_args)
            .env("KUBECONFIG", &token)
            .env_remove("KUBERNETES_SERVICE_HOST")
            // What the chart's downward API gives the pod.
            .env("POD_NAME", "mirrorfleet-operator-7d9f-abcde")
            .env("MIRRORFLEET_NAMESPACE", NS)
            .env("RUST_LOG", "info,kube=warn"),
        &dir.path().join("operator.log"),
    );
    wait_for("the operator to lead", DEADLINE, || async {
        match get(metrics_port, "/metrics").await {
            Ok((200, m)) if m.contains("\nmirrorfleet_operator_leader 1") => Ok(()),
            other => Err(format!("{other:?}\n{}", operator.tail())),
        }
    })
    .await;
    let lease: Lease = Api::namespaced(client.clone(), NS)
        .get("mirrorfleet-operator")
        .await
        .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("mirrorfleet-operator-7d9f-abcde"),
        "the chart's Lease name, held under POD_NAME"
    );

    // Its whole job on a fleet: statuses, the source indexed and the mirror scanned by Jobs
    // in the chart's image, the mirror probed healthy, Events.
    let fleet = join(&[
        project_yaml(&trees.rsync_url()),
        sponsor_yaml("loopback-hosting"),
        mirror_yaml("full", "loopback-hosting", "DE", trees.full.port),
        region_rule_yaml("europe-boost", "full"),
    ]);
    let applied = Instant::now();
    api.kubectl(&["apply", "-n", NS, "-f", "-"], Some(&fleet))
        .await;
    let projects: Api<Project> = Api::namespaced(client.clone(), NS);
    let mirrors: Api<Mirror> = Api::namespaced(client.clone(), NS);
    let sponsors: Api<Sponsor> = Api::namespaced(client.clone(), NS);
    let rules: Api<RegionRule> = Api::namespaced(client.clone(), NS);
    let is = |o: &dyn Conditioned, type_: &str| {
        condition(o.conditions(), type_, ConditionStatus::True, o.generation()).map(|_| ())
    };
    watch_until(&projects, PROJECT, "Project Ready", DEADLINE, |o| {
        is(o, "Ready")
    })
    .await;
    watch_until(
        &sponsors,
        "loopback-hosting",
        "Sponsor Ready",
        DEADLINE,
        |o| is(o, "Ready"),
    )
    .await;
    watch_until(&rules, "europe-boost", "RegionRule Ready", DEADLINE, |o| {
        is(o, "Ready")
    })
    .await;
    watch_until(&mirrors, "full", "Mirror Ready", DEADLINE, |o| {
        is(o, "Ready")
    })
    .await;
    let statuses = applied.elapsed();
    watch_until(&projects, PROJECT, "Project Scanned", DEADLINE, |o| {
        is(o, "Scanned")
    })
    .await;
    watch_until(
        &mirrors,
        "full",
        "Mirror Scanned and Healthy",
        DEADLINE,
        |o| is(o, "Scanned").and_then(|()| is(o, "Healthy")),
    )
    .await;
    eprintln!(
        "under the chart's ServiceAccount: statuses {statuses:?}, scanned and healthy {:?} \
         after kubectl apply",
        applied.elapsed()
    );
    let jobs: Vec<Job> = Api::<Job>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(
        jobs.len() >= 2,
        "a source Job and a mirror scan Job: {}",
        jobs.len()
    );
    for job in &jobs {
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some(format!("mirrorfleet:{}", env!("CARGO_PKG_VERSION")).as_str()),
            "Job {} runs the chart's image",
            job.name_any()
        );
        let run = runner.wait_run(&job.name_any()).await;
        assert_eq!(run.exit_code, Some(0), "{run:?}");
    }
    let events = api
        .kubectl(
            &["get", "events.events.k8s.io", "-n", NS, "-o", "json"],
            None,
        )
        .await;
    let events: Value = serde_json::from_str(&events).unwrap();
    let reasons: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert!(
        reasons.contains(&"HealthyTrue"),
        "Events published: {reasons:?}"
    );

    // The redirector as the chart runs it, on the state the operator wrote.
    let redirector_bin = Path::new(MIRRORFLEET).with_file_name("mirrorfleet-redirector");
    assert!(
        redirector_bin.is_file(),
        "{} is missing: `cargo build -p mirrorfleet-redirector` (scripts/test's cargo test \
         --workspace builds it)",
        redirector_bin.display()
    );
    let deployment = get_json(&api, "deployment", "mirrorfleet-redirector").await;
    let c = container(&deployment, "redirector");
    assert_eq!(
        c["command"],
        serde_json::json!(["/usr/bin/mirrorfleet-redirector"])
    );
    let port = free_port();
    let redirector_args = replaced(
        &args(c),
        &[
            ("--redis=", redis_url.clone()),
            ("--listen=", format!("127.0.0.1:{port}")),
        ],
    );
    eprintln!("$ mirrorfleet-redirector {}", redirector_args.join(" "));
    let redirector = Process::start(
        Command::new(&redirector_bin).args(&redirector_args),
        &dir.path().join("redirector.log"),
    );
    wait_for("the redirector to be ready", DEADLINE, || async {
        match get(port, "/readyz").await {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}\n{}", redirector.tail())),
        }
    })
    .await;
    let (status, _) = get(port, "/healthz").await.unwrap();
    assert_eq!(status, 200);

    // What the ServiceAccount may and may not do.
    let may = |verb: &'static str, resource: &'static str, ns: &'static str| {
        let token = token.clone();
        let api = &api;
        async move { api.can_i(&token, verb, resource, ns).await }
    };
    for (verb, resource) in [
        ("watch", "mirrors.mirrorfleet.io"),
        ("patch", "mirrors.mirrorfleet.io/status"),
        ("create", "jobs.batch"),
        ("update", "leases.coordination.k8s.io"),
        ("create", "events.events.k8s.io"),
    ] {
        assert!(may(verb, resource, NS).await, "may {verb} {resource}");
    }
    for (verb, resource, ns) in [
        ("get", "secrets", NS),
        ("list", "secrets", NS),
        ("create", "pods", NS),
        ("create", "deployments.apps", NS),
        ("patch", "deployments.apps", NS),
        ("create", "roles.rbac.authorization.k8s.io", NS),
        ("create", "rolebindings.rbac.authorization.k8s.io", NS),
        ("delete", "mirrors.mirrorfleet.io", NS),
        ("create", "mirrors.mirrorfleet.io", NS),
        ("delete", "jobs.batch", NS),
        ("delete", "leases.coordination.k8s.io", NS),
        ("list", "mirrors.mirrorfleet.io", "default"),
        ("create", "jobs.batch", "default"),
        (
            "create",
            "customresourcedefinitions.apiextensions.k8s.io",
            "default",
        ),
    ] {
        assert!(
            !may(verb, resource, ns).await,
            "may not {verb} {resource} in {ns}"
        );
    }
    drop(redirector);
    drop(operator);

    // Upgrade: a new image tag, more operators, a wider autoscaler, the Git sync on.
    let out = run_logged(
        helm_cmd()
            .args(["upgrade", RELEASE])
            .arg(chart_dir())
            .args(["--namespace", NS])
            .args(["--set", "image.tag=0.1.1-test"])
            .args(["--set", "operator.replicas=3"])
            .args(["--set", "redirector.autoscaling.maxReplicas=20"])
            .args(["--set", "operator.git.enabled=true"])
            .args([
                "--set",
                "operator.git.url=https://git.example.org/fleet.git",
            ]),
    );
    assert!(out.status.success(), "helm upgrade");
    assert!(String::from_utf8_lossy(&out.stdout).contains("REVISION: 2"));
    let operator = get_json(&api, "deployment", "mirrorfleet-operator").await;
    assert_eq!(operator["spec"]["replicas"], 3);
    let c = container(&operator, "operator");
    assert_eq!(c["image"], "mirrorfleet:0.1.1-test");
    let a = args(c);
    assert!(
        a.contains(&"--image=mirrorfleet:0.1.1-test".to_owned()),
        "scan Jobs follow: {a:?}"
    );
    assert!(
        a.contains(&"--git=https://git.example.org/fleet.git".to_owned()),
        "{a:?}"
    );
    let redirector = get_json(&api, "deployment", "mirrorfleet-redirector").await;
    assert_eq!(
        container(&redirector, "redirector")["image"],
        "mirrorfleet:0.1.1-test"
    );
    let hpa = get_json(&api, "hpa", "mirrorfleet-redirector").await;
    assert_eq!(hpa["spec"]["maxReplicas"], 20);
    let mut roles = names(&api, "roles").await;
    roles.sort();
    assert_eq!(roles, ["mirrorfleet-operator", "mirrorfleet-operator-git"]);
    assert!(
        may("delete", "mirrors.mirrorfleet.io", NS).await,
        "with the Git sync, the operator may delete what a commit dropped"
    );
    let history = run_logged(helm_cmd().args(["history", RELEASE, "--namespace", NS]));
    assert!(history.status.success());
    assert_eq!(
        String::from_utf8_lossy(&history.stdout)
            .lines()
            .filter(|l| l.contains("mirrorfleet-0.1.0"))
            .count(),
        2,
        "two revisions"
    );

    // Uninstall: the chart's objects go; the CRDs (helm never deletes crds/) and the
    // fleet's resources stay.
    let out = run_logged(helm_cmd().args(["uninstall", RELEASE, "--namespace", NS]));
    assert!(out.status.success(), "helm uninstall");
    for kind in [
        "deployments",
        "statefulsets",
        "services",
        "serviceaccounts",
        "roles",
        "rolebindings",
        "horizontalpodautoscalers",
        "poddisruptionbudgets",
        "configmaps",
        "networkpolicies",
    ] {
        let left = names(&api, kind).await;
        assert!(left.is_empty(), "{kind} left after uninstall: {left:?}");
    }
    let crds = api.kubectl(&["get", "crd", "-o", "name"], None).await;
    assert_eq!(crds.matches(".mirrorfleet.io").count(), 4, "{crds}");
    assert!(
        mirrors.get("full").await.is_ok(),
        "the fleet's Mirror stays"
    );
    eprintln!("install, upgrade and uninstall in {:?}", started.elapsed());
}
