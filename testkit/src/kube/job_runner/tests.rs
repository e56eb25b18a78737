//! How a Job's container becomes a local command line: one row per rule of the module docs.

use super::*;

fn job(container: serde_json::Value, volumes: serde_json::Value) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": "scan" },
        "spec": {
            "activeDeadlineSeconds": 30,
            "template": { "spec": {
                "restartPolicy": "Never",
                "containers": [container],
                "volumes": volumes,
            }},
        },
    }))
    .unwrap()
}

fn data_volume() -> serde_json::Value {
    json!([{ "name": "data", "persistentVolumeClaim": { "claimName": "state" } }])
}

fn registered() -> Vec<(String, PathBuf)> {
    vec![("state".to_owned(), PathBuf::from("/tmp/host-state"))]
}

#[test]
fn args_follow_command_without_its_first_element() {
    let job = job(
        json!({ "name": "c", "image": "i", "command": ["/usr/bin/mirrorfleet", "scan"], "args": ["--once"] }),
        json!([]),
    );
    let plan = plan(&job, &[]).unwrap();
    assert_eq!(plan.args, ["scan", "--once"]);
    assert_eq!(plan.deadline, Some(Duration::from_secs(30)));
}

#[test]
fn mount_path_prefixes_are_rewritten_in_args_env_and_working_dir() {
    let job = job(
        json!({
            "name": "c", "image": "i",
            "args": ["--state", "/var/lib/mf/index", "/var/lib/mf", "/var/lib/mfx"],
            "env": [{ "name": "STATE", "value": "/var/lib/mf/x" }, { "name": "OTHER", "value": "/etc" }],
            "workingDir": "/var/lib/mf",
            "volumeMounts": [{ "name": "data", "mountPath": "/var/lib/mf/" }],
        }),
        data_volume(),
    );
    let plan = plan(&job, &registered()).unwrap();
    assert_eq!(
        plan.args,
        [
            "--state",
            "/tmp/host-state/index",
            "/tmp/host-state",
            // Not under the mount: only a whole path element counts.
            "/var/lib/mfx"
        ]
    );
    assert_eq!(
        plan.env,
        [
            ("STATE".to_owned(), "/tmp/host-state/x".to_owned()),
            ("OTHER".to_owned(), "/etc".to_owned())
        ]
    );
    assert_eq!(plan.working_dir.as_deref(), Some("/tmp/host-state"));
}

#[test]
fn sub_path_is_joined_to_the_host_dir() {
    let job = job(
        json!({
            "name": "c", "image": "i", "args": ["/data/f"],
            "volumeMounts": [{ "name": "data", "mountPath": "/data", "subPath": "p1" }],
        }),
        data_volume(),
    );
    assert_eq!(
        plan(&job, &registered()).unwrap().args,
        ["/tmp/host-state/p1/f"]
    );
}

#[test]
fn an_unregistered_claim_fails_naming_it() {
    let job = job(
        json!({ "name": "c", "image": "i", "volumeMounts": [{ "name": "data", "mountPath": "/data" }] }),
        data_volume(),
    );
    let err = plan(&job, &[]).unwrap_err();
    assert!(err.contains("claim state"), "{err}");
}

#[test]
fn value_from_fails_naming_the_variable() {
    let job = job(
        json!({ "name": "c", "image": "i", "env": [{ "name": "TOKEN", "valueFrom": { "secretKeyRef": { "name": "s", "key": "k" } } }] }),
        json!([]),
    );
    let err = plan(&job, &[]).unwrap_err();
    assert!(err.contains("env TOKEN"), "{err}");
}
