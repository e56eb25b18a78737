//! Scan Jobs: the Job built, its name, when it is over, when a scan is due.

use super::*;

fn mirror() -> Mirror {
    let mut m: Mirror = serde_json::from_value(serde_json::json!({
        "apiVersion": "mirrorfleet.io/v1alpha1",
        "kind": "Mirror",
        "metadata": {"name": "tiny-mirror", "namespace": "fleet", "uid": "u-1"},
        "spec": {"sponsorRef": "s", "projects": [{"project": "videolan", "https": "https://m.example/videolan/"}]}
    }))
    .unwrap();
    m.metadata.generation = Some(1);
    m
}

#[test]
fn the_job_is_owned_bounded_and_runs_the_scan() {
    let settings = JobSettings {
        image: "registry.example/mirrorfleet:1.2.3".into(),
        store_args: vec!["--redis=redis://redis:6379".into()],
        ..JobSettings::default()
    };
    let job = scan_job(&mirror(), "videolan", &settings, 1_795_309_320);
    let meta = &job.metadata;
    assert_eq!(meta.namespace.as_deref(), Some("fleet"));
    let owner = &meta.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (
            owner.kind.as_str(),
            owner.name.as_str(),
            owner.uid.as_str(),
            owner.controller
        ),
        ("Mirror", "tiny-mirror", "u-1", Some(true))
    );
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.ttl_seconds_after_finished, Some(3600));
    assert_eq!(spec.backoff_limit, Some(1));
    assert_eq!(spec.active_deadline_seconds, Some(1800));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let c = &pod.containers[0];
    assert_eq!(
        c.image.as_deref(),
        Some("registry.example/mirrorfleet:1.2.3")
    );
    assert_eq!(
        c.args.as_deref().unwrap(),
        [
            "scan",
            "mirror",
            "--mirror",
            "tiny-mirror",
            "--project",
            "videolan",
            "--redis=redis://redis:6379"
        ]
    );
    let res = c.resources.as_ref().unwrap();
    assert_eq!(
        res.limits.as_ref().unwrap()["memory"],
        Quantity("512Mi".into())
    );
    assert_eq!(
        res.requests.as_ref().unwrap()["cpu"],
        Quantity("100m".into())
    );
    let labels = meta.labels.as_ref().unwrap();
    assert_eq!(labels[LABEL_MIRROR], "tiny-mirror");
    assert_eq!(labels[LABEL_PROJECT], "videolan");
}

#[test]
fn job_names_are_valid_and_distinct_over_time() {
    let long = "m".repeat(80);
    for (m, p) in [("a", "b"), (long.as_str(), "videolan"), ("x.example", "y")] {
        let n = job_name(m, p, 1_795_309_320);
        assert!(n.len() <= 63, "{n}");
        assert!(
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{n}"
        );
        assert!(n.ends_with(&format!("-{:x}", 1_795_309_320)), "{n}");
    }
    assert_ne!(job_name("a", "b", 1), job_name("a", "b", 2));
}

#[test]
fn when_a_job_is_over() {
    let job = |status: serde_json::Value| -> Job {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "j"}, "status": status}))
            .unwrap()
    };
    let cases = [
        ("just created", serde_json::json!(null), false),
        ("running", serde_json::json!({"active": 1}), false),
        (
            "a pod failed, retrying",
            serde_json::json!({"active": 1, "failed": 1}),
            false,
        ),
        (
            "complete",
            serde_json::json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}),
            true,
        ),
        (
            "failed",
            serde_json::json!({"failed": 2, "conditions": [{"type": "Failed", "status": "True"}]}),
            true,
        ),
        (
            "suspended",
            serde_json::json!({"conditions": [{"type": "Suspended", "status": "True"}]}),
            false,
        ),
    ];
    for (name, status, want) in cases {
        assert_eq!(finished(&job(status)), want, "{name}");
    }
}

#[test]
fn when_a_scan_is_due() {
    let now = 10_000;
    let f = |last_scan, last_sync, running, requested| ScanFacts {
        last_scan,
        last_sync,
        running,
        requested,
    };
    let cases = [
        (
            "never scanned",
            f(None, None, false, false),
            Some(Due::First),
        ),
        ("running", f(None, None, true, true), None),
        ("fresh", f(Some(now - 10), None, false, false), None),
        (
            "interval passed",
            f(Some(now - 3600), None, false, false),
            Some(Due::Interval),
        ),
        (
            "requested",
            f(Some(now - 10), None, false, true),
            Some(Due::Requested),
        ),
        (
            "synced since",
            f(Some(now - 10), Some(now - 5), false, false),
            Some(Due::Synced),
        ),
        (
            "synced before",
            f(Some(now - 10), Some(now - 20), false, false),
            None,
        ),
    ];
    for (name, facts, want) in cases {
        assert_eq!(due(&facts, 3600, now), want, "{name}");
    }
}
