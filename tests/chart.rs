//! The Helm chart (charts/mirrorfleet) as files: its CRDs are `crds/crds.yaml`, its versions
//! the crate's, its dashboard's queries name metrics the code exports (plain `cargo test`);
//! and, with helm (scripts/helm-bin) and kubernetes-validate (scripts/kubernetes-validate-bin),
//! which scripts/test provides: `helm lint` is clean, every rendering passes Kubernetes' own
//! schemas strictly with the security settings the chart promises, bad values are refused
//! with the field named, and the plain install in deploy/install/ is what the chart renders.
//! `helm install`, `upgrade` and `uninstall` on a real API server: tests/chart_install.rs.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[path = "chart/tools.rs"]
mod tools;

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;
use tools::*;

/// The Kubernetes release whose schemas the renderings are checked against: the test API
/// server's (tests/k8s/go.mod).
const KUBERNETES: &str = "1.35.0";

/// Values files with which the chart is linted and validated, besides its defaults.
const VALUES: [&str; 2] = [
    "tests/chart/all-options.yaml",
    "tests/chart/external-redis.yaml",
];

#[test]
fn the_charts_crds_are_the_bytes_of_crds_yaml() {
    let ours = std::fs::read(repo_root().join("crds/crds.yaml")).unwrap();
    let chart = std::fs::read(chart_dir().join("crds/crds.yaml")).unwrap();
    assert!(
        ours == chart,
        "charts/mirrorfleet/crds/crds.yaml differs from crds/crds.yaml: run scripts/render-manifests"
    );
    let entries: Vec<_> = std::fs::read_dir(chart_dir().join("crds"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["crds.yaml"], "nothing else in the chart's crds/");
}

#[test]
fn the_chart_and_its_image_tag_have_the_crate_version() {
    let chart: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap())
            .unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(
        (chart["version"].as_str(), chart["appVersion"].as_str()),
        (Some(version), Some(version)),
        "Chart.yaml's version and appVersion (the image's default tag) are the crate's"
    );
}

#[test]
fn the_bundled_redis_scripts_are_valid_shell() {
    // Only parsed: no test runs a pod (no kubelet), so the scripts' logic is unexercised.
    for script in ["files/redis-start.sh", "files/sentinel-start.sh"] {
        let out = Command::new("sh")
            .arg("-n")
            .arg(chart_dir().join(script))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every metric name in `text` (`mirrorfleet_…`).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("mirrorfleet_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        names.insert(text[start..end].to_owned());
        i = end;
    }
    names
}

/// What the redirector's and the operator's `/metrics` expose: every sample name of their
/// `# TYPE` lines (a histogram's `_bucket`, `_sum` and `_count`).
fn exported_metrics() -> BTreeSet<String> {
    let redirector = mirrorfleet_redirector::metrics::Metrics::default().render();
    let operator = mirrorfleet_operator::metrics::Metrics::default().render();
    let mut names = BTreeSet::new();
    for line in redirector.lines().chain(operator.lines()) {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        } else {
            names.insert(name.to_owned());
        }
    }
    names
}

#[test]
fn every_dashboard_query_names_a_metric_the_code_exports() {
    let exported = exported_metrics();
    assert!(
        exported.contains("mirrorfleet_requests_total")
            && exported.contains("mirrorfleet_operator_leader"),
        "both components' metrics are read: {exported:?}"
    );
    let text = std::fs::read_to_string(chart_dir().join("dashboards/mirrorfleet.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .collect();
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut used = BTreeSet::new();
    for panel in &panels {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(
                !names.is_empty(),
                "panel {}: {expr} names no metric",
                panel["title"]
            );
            let unknown: Vec<_> = names.difference(&exported).collect();
            assert!(
                unknown.is_empty(),
                "panel {}: {unknown:?} are not exported by the redirector or the operator \
                 (exported: {exported:?})",
                panel["title"]
            );
            used.extend(names);
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        let query = var["definition"].as_str().unwrap_or_default();
        let unknown: Vec<_> = metric_names(query).difference(&exported).cloned().collect();
        assert!(unknown.is_empty(), "variable {}: {unknown:?}", var["name"]);
    }
    // What the issue asks the dashboard to show.
    for wanted in [
        "mirrorfleet_requests_total",
        "mirrorfleet_request_duration_seconds_bucket",
        "mirrorfleet_redirects_total",
        "mirrorfleet_snapshot_timestamp_seconds",
        "mirrorfleet_operator_reconciles_total",
        "mirrorfleet_operator_reconcile_errors_total",
        "mirrorfleet_operator_scan_jobs_total",
        "mirrorfleet_operator_leader",
        "mirrorfleet_operator_health_transitions_total",
    ] {
        assert!(used.contains(wanted), "no panel shows {wanted}");
    }
}

#[test]
#[ignore = "needs helm: scripts/helm-bin builds it; scripts/test runs this tier"]
fn helm_lint_is_clean_with_the_defaults_and_every_option() {
    let home = tempfile::tempdir().unwrap();
    for values in [None].into_iter().chain(VALUES.map(Some)) {
        let mut cmd = helm(home.path(), None);
        cmd.args(["lint", "--strict"]).arg(chart_dir());
        if let Some(v) = values {
            cmd.arg("-f").arg(repo_root().join(v));
        }
        let out = run_logged(&mut cmd);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "helm lint {values:?}: {text}");
        assert!(
            text.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{text}"
        );
        let findings: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with('['))
            .filter(|l| !l.contains("icon is recommended"))
            .collect();
        assert!(findings.is_empty(), "helm lint {values:?}: {findings:?}");
    }
}

/// Runs kubernetes-validate --strict on `yaml`; (exit success, output).
fn kubernetes_validate(yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(kubernetes_validate_path())
        .args(["--strict", "--kubernetes-version", KUBERNETES])
        .arg(&file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The pod spec of a workload.
fn pod_spec(w: &Value) -> &Value {
    &w["spec"]["template"]["spec"]
}

#[test]
#[ignore = "needs helm and kubernetes-validate: scripts/test installs them and runs this tier"]
fn every_rendering_passes_kubernetes_schemas_strictly_and_runs_locked_down() {
    // The validator is strict: a field Kubernetes does not know fails it.
    let (ok, text) = kubernetes_validate(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}], colour: red}\n",
    );
    assert!(!ok, "an unknown field fails strict validation: {text}");

    for values in [None].into_iter().chain(VALUES.map(Some)) {
        let file = values.map(|v| repo_root().join(v));
        let args: Vec<&str> = match &file {
            Some(f) => vec!["-f", f.to_str().unwrap()],
            None => vec![],
        };
        let rendered = template(&args).unwrap();
        let (ok, text) = kubernetes_validate(&rendered);
        eprintln!("kubernetes-validate {values:?}:\n{text}");
        assert!(ok, "{values:?}: {text}");
        // The only kinds without a schema there are the Prometheus Operator's.
        for line in text.lines().filter(|l| l.starts_with("WARN")) {
            assert!(
                line.contains("monitoring.coreos.com/v1"),
                "{values:?}: {line}"
            );
        }
        let docs = documents(&rendered);
        let passed = text.lines().filter(|l| l.contains(" passed for ")).count();
        let monitors = docs
            .iter()
            .filter(|d| d["apiVersion"] == "monitoring.coreos.com/v1")
            .count();
        assert_eq!(
            passed + monitors,
            docs.len(),
            "{values:?}: every other object was validated"
        );

        for w in docs
            .iter()
            .filter(|d| d["kind"] == "Deployment" || d["kind"] == "StatefulSet")
        {
            let name = &w["metadata"]["name"];
            let pod = pod_spec(w);
            let psc = &pod["securityContext"];
            assert_eq!(psc["runAsNonRoot"], true, "{name}");
            assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
            assert!(psc["runAsUser"].as_u64().unwrap() > 0, "{name}");
            let containers = pod["containers"].as_array().unwrap().iter();
            let init = pod["initContainers"].as_array().into_iter().flatten();
            for c in containers.chain(init) {
                let sc = &c["securityContext"];
                let what = format!("{name} container {}", c["name"]);
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
                assert_eq!(
                    sc["capabilities"]["drop"],
                    serde_json::json!(["ALL"]),
                    "{what}"
                );
                assert!(
                    c["resources"]["requests"].is_object(),
                    "{what} has requests"
                );
            }
        }
        // Monitors select the Services' labels and name their ports.
        for m in docs.iter().filter(|d| d["kind"] == "ServiceMonitor") {
            let wanted = &m["spec"]["selector"]["matchLabels"];
            let port = &m["spec"]["endpoints"][0]["port"];
            let served = docs.iter().any(|s| {
                s["kind"] == "Service"
                    && wanted
                        .as_object()
                        .unwrap()
                        .iter()
                        .all(|(k, v)| &s["metadata"]["labels"][k] == v)
                    && s["spec"]["ports"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| &p["name"] == port)
            });
            assert!(
                served,
                "{} selects no Service with port {port}",
                m["metadata"]["name"]
            );
        }
    }
}

#[test]
#[ignore = "needs helm: scripts/helm-bin builds it; scripts/test runs this tier"]
fn the_defaults_render_what_the_issue_promises() {
    let docs = documents(&template(&[]).unwrap());
    let operator = object(&docs, "Deployment", "mirrorfleet-operator");
    assert_eq!(operator["spec"]["replicas"], 2);
    let c = container(operator, "operator");
    assert_eq!(
        c["image"],
        format!("mirrorfleet:{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    let pod_name = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "POD_NAME")
        .unwrap();
    assert_eq!(
        pod_name["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert!(
        args(c).contains(&"--redis=redis://mirrorfleet-redis.fleet.svc:6379/0".to_owned()),
        "{:?}",
        args(c)
    );

    let redirector = object(&docs, "Deployment", "mirrorfleet-redirector");
    assert!(
        redirector["spec"]["replicas"].is_null(),
        "the HPA owns the replica count"
    );
    let c = container(redirector, "redirector");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    let sleep = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap();
    let grace = pod_spec(redirector)["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    // The redirector drains for up to 10 s after SIGTERM, then flushes stats for up to 5 s
    // (redirector/src/server.rs).
    assert!(sleep > 10, "preStop sleep {sleep} s outlasts the drain");
    assert!(
        grace > sleep + 15,
        "grace {grace} s covers sleep, drain and flush"
    );
    assert_eq!(
        pod_spec(redirector)["topologySpreadConstraints"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(pod_spec(redirector)["automountServiceAccountToken"], false);
    let hpa = object(&docs, "HorizontalPodAutoscaler", "mirrorfleet-redirector");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        "mirrorfleet-redirector"
    );
    object(&docs, "PodDisruptionBudget", "mirrorfleet-redirector");
    let redis = object(&docs, "StatefulSet", "mirrorfleet-redis");
    assert_eq!(container(redis, "redis")["image"], "redis:7.4");
    for np in ["redirector", "operator", "scan", "redis"] {
        object(&docs, "NetworkPolicy", &format!("mirrorfleet-{np}"));
    }
    let dashboard = object(&docs, "ConfigMap", "mirrorfleet-dashboard");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: Value =
        serde_json::from_str(dashboard["data"]["mirrorfleet.json"].as_str().unwrap()).unwrap();
    assert_eq!(json["uid"], "mirrorfleet");

    // The Role's rules are files/operator-role.yaml's, and nothing binds the Git Role.
    let file = std::fs::read_to_string(chart_dir().join("files/operator-role.yaml")).unwrap();
    let roles = documents(&file);
    let role = object(&docs, "Role", "mirrorfleet-operator");
    assert_eq!(
        role["rules"],
        object(&roles, "Role", "mirrorfleet-operator")["rules"]
    );
    assert!(
        !docs
            .iter()
            .any(|d| d["metadata"]["name"] == "mirrorfleet-operator-git"),
        "no Git Role without operator.git.enabled"
    );

    // With Sentinel and a password, the clients ask the Sentinels and read the password
    // from the Secret, which the operator names for its scan Jobs.
    let all = repo_root().join("tests/chart/all-options.yaml");
    let docs = documents(&template(&["-f", all.to_str().unwrap()]).unwrap());
    let c = container(object(&docs, "Deployment", "fleet-operator"), "operator");
    let a = args(c);
    for wanted in [
        "--sentinel=redis://fleet-redis-sentinel.fleet.svc:26379",
        "--sentinel-master=fleet",
        "--redis-password-secret=redis-password",
        "--redis-password-key=redis-password",
        "--git=https://git.example.org/fleet.git",
    ] {
        assert!(a.contains(&wanted.to_owned()), "{wanted} in {a:?}");
    }
    assert!(
        !a.iter().any(|x| x.starts_with("--redis-password=")),
        "the password itself is in no argument: {a:?}"
    );
    let r = container(
        object(&docs, "Deployment", "fleet-redirector"),
        "redirector",
    );
    assert!(
        args(r).contains(&"--trusted-proxy=192.0.2.0/24,10.0.0.0/8,fd00::/8".to_owned()),
        "the redirector's and the Ingress' trusted proxies: {:?}",
        args(r)
    );
    let git_role = object(&docs, "Role", "fleet-operator-git");
    assert_eq!(
        git_role["rules"],
        object(&roles, "Role", "mirrorfleet-operator-git")["rules"]
    );
    object(&docs, "RoleBinding", "fleet-operator-git");
    assert_eq!(
        object(&docs, "StatefulSet", "fleet-redis")["spec"]["replicas"],
        5
    );
}

#[test]
#[ignore = "needs helm: scripts/helm-bin builds it; scripts/test runs this tier"]
fn bad_values_are_refused_naming_the_field() {
    // (values, what the refusal must say), each row one rule of values.schema.json or of
    // the templates.
    let rows: [(&[&str], &str); 12] = [
        (&["--set", "redirector.port=0"], "/redirector/port"),
        (&["--set", "redirector.prot=8080"], "'prot' not allowed"),
        (
            &["--set", "image.pullPolicy=Sometimes"],
            "/image/pullPolicy",
        ),
        (&["--set", "operator.replicas=0"], "/operator/replicas"),
        (&["--set", "redis.mode=cluster"], "/redis/mode"),
        (&["--set", "redis.mode=external"], "/redis/external"),
        (
            &["--set", "redirector.trustedProxies={not-a-cidr}"],
            "/redirector/trustedProxies/0",
        ),
        (&["--set", "geoip.source=s3"], "/geoip/source"),
        (&["--set", "operator.git.enabled=true"], "/operator/git/url"),
        (
            &["--set", "redis.bundled.sentinel.replicas=2"],
            "/redis/bundled/sentinel/replicas",
        ),
        (
            &["--set", "ingress.enabled=true"],
            "ingress.trustedProxies is needed",
        ),
        (
            &["--set", "redirector.terminationGracePeriodSeconds=20"],
            "must exceed redirector.preStopSleepSeconds",
        ),
    ];
    for (values, says) in rows {
        match template(values) {
            Ok(_) => panic!("{values:?} was accepted"),
            Err(e) => assert!(e.contains(says), "{values:?}: wanted {says:?} in: {e}"),
        }
    }
    assert!(
        template(&["--set", "geoip.source=volume"])
            .unwrap_err()
            .contains("geoip.volume")
    );
}

#[test]
#[ignore = "needs helm: scripts/helm-bin builds it; scripts/test runs this tier"]
fn the_plain_install_is_what_the_chart_renders() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(repo_root().join("scripts/render-manifests"))
        .arg("--out")
        .arg(out.path())
        .env("MIRRORFLEET_HELM", helm_path())
        .status()
        .unwrap();
    assert!(status.success());
    for file in ["crds.yaml", "mirrorfleet.yaml"] {
        let fresh = std::fs::read_to_string(out.path().join(file)).unwrap();
        let committed =
            std::fs::read_to_string(repo_root().join("deploy/install").join(file)).unwrap();
        assert!(
            fresh == committed,
            "deploy/install/{file} is not what the chart renders: run scripts/render-manifests"
        );
    }
    let docs = documents(
        &std::fs::read_to_string(repo_root().join("deploy/install/mirrorfleet.yaml")).unwrap(),
    );
    assert_eq!(docs[0]["kind"], "Namespace");
    assert!(
        docs.iter()
            .skip(1)
            .all(|d| d["metadata"]["namespace"] == "mirrorfleet"),
        "every namespaced object names its namespace"
    );
}
