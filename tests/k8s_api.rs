//! The real-API-server tier (testkit's `kube` feature) end to end: kube-apiserver v1.35.4 on
//! etcd takes mirrorfleet's CRDs and the example fleet, enforces RBAC on a ServiceAccount's
//! token, and Jobs run through the `JobRunner` with their status read back from the API.
//!
//! Needs the binaries of `scripts/k8s-bins` (scripts/test builds them). Each test starts its
//! own etcd and kube-apiserver. Measured here (2 cores shared with other builds): ready
//! 2.8–3.7 s after `ApiServer::start()` is called (certificates included) with one test at
//! a time, 3.2–5.8 s with the three in parallel; the whole file runs in about 15 s.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use mirrorfleet_crds::v1alpha1::Mirror;
use mirrorfleet_testkit::kube::{ApiServer, JobRunner, client_from};
use mirrorfleet_testkit::wait_for;

const MIRRORFLEET: &str = env!("CARGO_BIN_EXE_mirrorfleet");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A started server, with the time it took on stderr (`cargo test -- --nocapture`).
async fn start() -> ApiServer {
    let started = Instant::now();
    let server = ApiServer::start().await;
    eprintln!("kube-apiserver ready after {:?}", started.elapsed());
    server
}

/// Applies `mirrorfleet crds` and waits until every CRD it holds is Established.
async fn apply_crds(server: &ApiServer) {
    let out = std::process::Command::new(MIRRORFLEET)
        .arg("crds")
        .output()
        .unwrap();
    assert!(out.status.success(), "mirrorfleet crds: {out:?}");
    let crds = String::from_utf8(out.stdout).unwrap();
    server.kubectl(&["apply", "-f", "-"], Some(&crds)).await;

    let api: Api<CustomResourceDefinition> = Api::all(server.client().await);
    let names: Vec<&str> = crds
        .lines()
        .filter_map(|l| l.strip_prefix("  name: "))
        .filter(|n| n.ends_with(".mirrorfleet.io"))
        .collect();
    assert_eq!(names.len(), 4, "CRD names in `mirrorfleet crds`: {names:?}");
    for name in names {
        wait_for(
            &format!("CRD {name} Established"),
            Duration::from_secs(30),
            || {
                let api = api.clone();
                async move {
                    let crd = api.get(name).await.map_err(|e| e.to_string())?;
                    let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
                    if conditions
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                    {
                        Ok(())
                    } else {
                        Err(format!("conditions {conditions:?}"))
                    }
                }
            },
        )
        .await;
    }
}

/// (kind, name) of every object the example kustomization lists, read from its files.
fn example_objects() -> BTreeSet<(String, String)> {
    let examples = repo_root().join("examples");
    let kustomization: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(examples.join("kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let resources = kustomization["resources"].as_array().unwrap();
    resources
        .iter()
        .map(|file| {
            let path = examples.join(file.as_str().unwrap());
            let doc: serde_json::Value =
                serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let field = |v: &serde_json::Value| v.as_str().unwrap().to_owned();
            (field(&doc["kind"]), field(&doc["metadata"]["name"]))
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs the real API server: scripts/k8s-bins builds it; scripts/test runs this tier"]
async fn kubectl_takes_the_crds_and_the_example_fleet() {
    let server = start().await;

    let version: serde_json::Value =
        serde_json::from_str(&server.kubectl(&["version", "-o", "json"], None).await).unwrap();
    assert_eq!(
        version["serverVersion"]["gitVersion"], "v1.35.4",
        "{version}"
    );
    assert_eq!(
        version["clientVersion"]["gitVersion"], "v1.35.4",
        "{version}"
    );

    apply_crds(&server).await;
    server.create_namespace("mirrorfleet").await;
    let examples = repo_root().join("examples");
    server
        .kubectl(&["apply", "-k", examples.to_str().unwrap()], None)
        .await;

    let expected = example_objects();
    assert!(
        ["Project", "Sponsor", "Mirror", "RegionRule"]
            .iter()
            .all(|kind| expected.iter().any(|(k, _)| k == kind)),
        "the examples hold every kind: {expected:?}"
    );
    let listed: serde_json::Value = serde_json::from_str(
        &server
            .kubectl(
                &[
                    "get",
                    "mirrors,projects,sponsors,regionrules",
                    "-n",
                    "mirrorfleet",
                    "-o",
                    "json",
                ],
                None,
            )
            .await,
    )
    .unwrap();
    let listed: BTreeSet<(String, String)> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap().to_owned(),
                o["metadata"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(listed, expected);
}

#[tokio::test]
#[ignore = "needs the real API server: scripts/k8s-bins builds it; scripts/test runs this tier"]
async fn a_service_account_gets_what_its_role_grants_and_nothing_more() {
    let server = start().await;
    apply_crds(&server).await;
    server.create_namespace("fleet").await;
    let mirror =
        std::fs::read_to_string(repo_root().join("examples/mirrors/maple-halifax.yaml")).unwrap();
    server
        .kubectl(&["apply", "-n", "fleet", "-f", "-"], Some(&mirror))
        .await;

    let before = server.service_account_kubeconfig("fleet", "reader").await;
    assert!(
        !server.can_i(&before, "get", "mirrors", "fleet").await,
        "a ServiceAccount without a RoleBinding may do nothing"
    );
    let rbac = "\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: { name: mirror-reader, namespace: fleet }
rules:
  - apiGroups: [mirrorfleet.io]
    resources: [mirrors]
    verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: reader-reads-mirrors, namespace: fleet }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: mirror-reader }
subjects:
  - { kind: ServiceAccount, name: reader, namespace: fleet }
";
    server.kubectl(&["apply", "-f", "-"], Some(rbac)).await;

    // Asking again reuses the ServiceAccount (a fresh token), now bound to the Role.
    let kubeconfig = server.service_account_kubeconfig("fleet", "reader").await;
    assert!(server.can_i(&kubeconfig, "get", "mirrors", "fleet").await);
    assert!(server.can_i(&kubeconfig, "list", "mirrors", "fleet").await);
    assert!(
        !server
            .can_i(&kubeconfig, "delete", "mirrors", "fleet")
            .await
    );
    assert!(!server.can_i(&kubeconfig, "get", "secrets", "fleet").await);
    assert!(
        !server
            .can_i(&kubeconfig, "list", "mirrors", "default")
            .await
    );

    let mirrors: Api<Mirror> = Api::namespaced(client_from(&kubeconfig).await, "fleet");
    let names: Vec<String> = mirrors
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|m| m.metadata.name)
        .collect();
    assert_eq!(names, ["maple-halifax"]);
    match mirrors
        .delete("maple-halifax", &DeleteParams::default())
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("deleting as the reader should be forbidden, got {other:?}"),
    }
}

/// A Job running `mirrorfleet` with `args`, the examples mounted at `/manifests` from the
/// claim `manifests` and scratch space at `/state` from the claim `state`; its one `env`
/// value (unused by mirrorfleet) lies under `/state`, to be rewritten too.
fn job(name: &str, args: &[&str], deadline_seconds: Option<i64>) -> Job {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": name, "labels": { "app": "mirrorfleet-test" } },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline_seconds,
            "template": { "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "mirrorfleet",
                    "image": "mirrorfleet:test",
                    "command": ["/usr/local/bin/mirrorfleet"],
                    "args": args,
                    "env": [{ "name": "MIRRORFLEET_STATE", "value": "/state/x" }],
                    "volumeMounts": [
                        { "name": "manifests", "mountPath": "/manifests", "readOnly": true },
                        { "name": "state", "mountPath": "/state" },
                    ],
                }],
                "volumes": [
                    { "name": "manifests", "persistentVolumeClaim": { "claimName": "manifests" } },
                    { "name": "state", "persistentVolumeClaim": { "claimName": "state" } },
                ],
            }},
        },
    }))
    .unwrap()
}

/// The Job's status conditions that are True, by type.
fn true_conditions(job: &Job) -> Vec<String> {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions
        .into_iter()
        .flatten()
        .filter(|c| c.status == "True")
        .map(|c| c.type_.clone())
        .collect()
}

#[tokio::test]
#[ignore = "needs the real API server: scripts/k8s-bins builds it; scripts/test runs this tier"]
async fn jobs_run_as_local_processes_and_end_with_the_job_controllers_status() {
    let server = start().await;
    server.create_namespace("scans").await;
    let state = tempfile::tempdir().unwrap();
    let client = server.client().await;
    let runner = JobRunner::builder(client.clone(), "scans", MIRRORFLEET)
        .selector("app=mirrorfleet-test")
        .with_volume("manifests", repo_root().join("examples"))
        .with_volume("state", state.path())
        .start();
    let jobs: Api<Job> = Api::namespaced(client, "scans");
    let pp = PostParams::default();
    jobs.create(&pp, &job("good", &["validate", "/manifests"], None))
        .await
        .unwrap();
    jobs.create(
        &pp,
        &job("missing", &["validate", "/manifests/no-such.yaml"], None),
    )
    .await
    .unwrap();
    jobs.create(
        &pp,
        &job(
            "endless",
            &[
                "standalone",
                "--manifests",
                "/manifests",
                "--state-dir",
                "/state/endless",
                "--listen",
                "127.0.0.1:0",
            ],
            Some(2),
        ),
    )
    .await
    .unwrap();

    let good = runner.wait_run("good").await;
    assert_eq!(good.exit_code, Some(0), "{good:?}");
    assert_eq!(good.status_written, Ok(true), "{good:?}");
    let examples = repo_root().join("examples");
    assert_eq!(good.args, ["validate", examples.to_str().unwrap()]);
    let state_x = format!("{}/x", state.path().display());
    assert_eq!(
        good.env,
        [("MIRRORFLEET_STATE".to_owned(), state_x.clone())]
    );
    let good = jobs.get_status("good").await.unwrap();
    assert_eq!(
        true_conditions(&good),
        ["SuccessCriteriaMet", "Complete"],
        "{:?}",
        good.status
    );
    let status = good.status.unwrap();
    assert_eq!(status.succeeded, Some(1));
    // `active: 0` is omitted by the API server (omitempty).
    assert_eq!(status.active.unwrap_or(0), 0);
    assert!(status.start_time.is_some() && status.completion_time.is_some());

    let missing = runner.wait_run("missing").await;
    let code = missing.exit_code.unwrap();
    assert_ne!(code, 0, "{missing:?}");
    assert_eq!(missing.status_written, Ok(false), "{missing:?}");
    let missing = jobs.get_status("missing").await.unwrap();
    assert_eq!(
        true_conditions(&missing),
        ["FailureTarget", "Failed"],
        "{:?}",
        missing.status
    );
    let status = missing.status.unwrap();
    assert_eq!(status.failed, Some(1));
    assert_eq!(status.completion_time, None);
    let failed = status.conditions.unwrap().pop().unwrap();
    assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
    let message = failed.message.unwrap();
    assert!(
        message.contains(&format!("exit code {code}")) && message.contains("no-such.yaml"),
        "{message}"
    );

    let endless = runner.wait_run("endless").await;
    assert!(endless.deadline_exceeded, "{endless:?}");
    assert_eq!(endless.exit_code, None, "{endless:?}");
    let endless = jobs.get_status("endless").await.unwrap();
    let failed = endless.status.unwrap().conditions.unwrap().pop().unwrap();
    assert_eq!(
        (failed.type_.as_str(), failed.reason.as_deref()),
        ("Failed", Some("DeadlineExceeded"))
    );

    assert_eq!(runner.started(), 3);
    assert_eq!(runner.runs().len(), 3);
}
