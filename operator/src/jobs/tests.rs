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
        retry_at: None,
    };
    let retry = |at| ScanFacts {
        retry_at: Some(at),
        ..f(None, None, false, false)
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
        ("failed, waiting", retry(now + 1), None),
        ("failed, wait over", retry(now), Some(Due::Retry)),
        (
            "failed, but asked for",
            ScanFacts {
                requested: true,
                ..retry(now + 60)
            },
            Some(Due::Requested),
        ),
    ];
    for (name, facts, want) in cases {
        assert_eq!(due(&facts, 3600, now), want, "{name}");
    }
}

fn finished_job(name: &str, mirror: Option<&str>, created: i64, outcome: &str) -> Arc<Job> {
    let mut labels = serde_json::json!({
        LABEL_PROJECT: "videolan",
        LABEL_SCAN: if mirror.is_some() { "mirror" } else { "source" },
    });
    if let Some(m) = mirror {
        labels[LABEL_MIRROR] = m.into();
    }
    let at = |t: i64| status::rfc3339(t);
    let conditions = match outcome {
        "running" => serde_json::json!([]),
        "Complete" => {
            serde_json::json!([{"type": "Complete", "status": "True", "lastTransitionTime": at(created + 5)}])
        }
        _ => {
            serde_json::json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
            "message": "exit 2", "lastTransitionTime": at(created + 5)}])
        }
    };
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": labels, "creationTimestamp": at(created)},
            "status": {"conditions": conditions},
        }))
        .unwrap(),
    )
}

use crate::status;

#[test]
fn failures_in_a_row_double_the_wait_and_a_success_resets_them() {
    let m = Some("tiny-mirror");
    let jobs = vec![
        finished_job("a", m, 100, "Failed"),
        finished_job("b", m, 200, "Complete"),
        finished_job("c", m, 300, "Failed"),
        finished_job("d", m, 400, "Failed"),
        finished_job("e", m, 500, "Failed"),
        // Another mirror's, and the source's: not this pair's.
        finished_job("x", Some("other"), 600, "Failed"),
        finished_job("y", None, 600, "running"),
    ];
    let h = history(&jobs, "videolan", m);
    assert!(!h.running);
    assert_eq!(h.failures, 3);
    let last = h.last_failure.clone().unwrap();
    assert_eq!((last.job.as_str(), last.at), ("e", 505));
    assert_eq!(last.why, "BackoffLimitExceeded: exit 2");
    // 30 s, 60 s, then 120 s after the third.
    assert_eq!(h.retry_at(3600), Some(505 + 120));
    // Never longer than the interval.
    assert_eq!(h.retry_at(90), Some(505 + 90));

    let many = History {
        failures: 40,
        ..h.clone()
    };
    assert_eq!(many.retry_at(86_400), Some(505 + RETRY_MAX_SECONDS));

    let source = history(&jobs, "videolan", None);
    assert!(source.running);
    assert_eq!(source.failures, 0);

    let ok = history(&jobs[..2], "videolan", m);
    assert_eq!((ok.failures, ok.retry_at(3600)), (0, None));
    assert_eq!(ok.last_failure, None);
}

fn project(source: serde_json::Value) -> Project {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "mirrorfleet.io/v1alpha1",
        "kind": "Project",
        "metadata": {"name": "videolan", "namespace": "fleet", "uid": "u-p"},
        "spec": {"routing": {"pathPrefix": "/videolan/"}, "source": source,
                 "scan": {"sourceIntervalMinutes": 2}}
    }))
    .unwrap()
}

#[test]
fn the_source_job_indexes_the_project_and_mounts_a_local_tree_read_only() {
    let settings = JobSettings {
        store_args: vec!["--redis=redis://redis:6379".into()],
        ..JobSettings::default()
    };
    let upstream = project(serde_json::json!({"rsync": "rsync://origin.example/videolan/"}));
    assert_eq!(source_interval(&upstream), 120);
    let job = source_job(&upstream, &settings, 1_795_309_320).unwrap();
    let name = job.metadata.name.clone().unwrap();
    assert!(name.starts_with("index-videolan-"), "{name}");
    let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Project", "u-p")
    );
    let labels = job.metadata.labels.as_ref().unwrap();
    assert_eq!(
        (labels[LABEL_SCAN].as_str(), labels.get(LABEL_MIRROR)),
        ("source", None)
    );
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(
        pod.containers[0].args.as_deref().unwrap(),
        [
            "scan",
            "source",
            "--project",
            "videolan",
            "--no-progress",
            "--redis=redis://redis:6379"
        ]
    );
    // Only the scratch /tmp of the read-only root filesystem; locked down as Pod Security
    // "restricted" asks.
    let names: Vec<&str> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(names, ["tmp"]);
    assert!(pod.volumes.as_ref().unwrap()[0].empty_dir.is_some());
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(
        (psc.run_as_non_root, psc.run_as_user),
        (Some(true), Some(65532))
    );
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    assert_eq!(pod.automount_service_account_token, Some(false));
    let sc = pod.containers[0].security_context.as_ref().unwrap();
    assert_eq!(
        (sc.read_only_root_filesystem, sc.allow_privilege_escalation),
        (Some(true), Some(false))
    );
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_owned()][..])
    );

    let local =
        project(serde_json::json!({"local": "/srv/videolan", "volumeClaim": "videolan-tree"}));
    let job = source_job(&local, &settings, 1).unwrap();
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "source")
        .unwrap();
    let claim = volume.persistent_volume_claim.as_ref().unwrap();
    assert_eq!(
        (claim.claim_name.as_str(), claim.read_only),
        ("videolan-tree", Some(true))
    );
    let mount = pod.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "source")
        .unwrap();
    assert_eq!(
        (
            mount.mount_path.as_str(),
            mount.read_only,
            mount.name.as_str()
        ),
        ("/srv/videolan", Some(true), volume.name.as_str())
    );

    let nowhere = project(serde_json::json!({"local": "/srv/videolan"}));
    assert_eq!(
        source_job(&nowhere, &settings, 1).unwrap_err(),
        NoSourceJob::LocalWithoutVolume("/srv/videolan".into())
    );
}

#[test]
fn intervals_come_from_the_mirror_then_the_project_then_the_default() {
    let mut m = mirror();
    let p = project(serde_json::json!({"rsync": "rsync://origin.example/videolan/"}));
    assert_eq!(mirror_interval(&m, None, 7200), 7200);
    let mut with_interval = p.clone();
    with_interval
        .spec
        .scan
        .as_mut()
        .unwrap()
        .mirror_interval_minutes = Some(30);
    assert_eq!(mirror_interval(&m, Some(&with_interval), 7200), 1800);
    m.spec.scan = Some(serde_json::from_value(serde_json::json!({"intervalMinutes": 10})).unwrap());
    assert_eq!(mirror_interval(&m, Some(&with_interval), 7200), 600);
    assert_eq!(
        source_interval(&project(serde_json::json!({"http": "https://o.example/"}))),
        120
    );
}

#[test]
fn the_redis_password_comes_from_its_secret_never_from_the_arguments() {
    let without = scan_job(&mirror(), "videolan", &JobSettings::default(), 1);
    let pod = without
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(
        pod.containers[0].env, None,
        "no Secret named: no environment"
    );

    let settings = JobSettings {
        store_args: vec!["--redis=redis://redis:6379".into()],
        redis_password_secret: Some(("redis-auth".into(), "redis-password".into())),
        ..JobSettings::default()
    };
    for job in [
        scan_job(&mirror(), "videolan", &settings, 1),
        source_job(
            &project(serde_json::json!({"rsync": "rsync://origin.example/videolan/"})),
            &settings,
            1,
        )
        .unwrap(),
    ] {
        let c = &job
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0];
        let env = c.env.as_deref().unwrap();
        assert_eq!(env.len(), 1, "{env:?}");
        assert_eq!(env[0].name, "MIRRORFLEET_REDIS_PASSWORD");
        assert_eq!(
            env[0].value, None,
            "the value is the Secret's, not in the spec"
        );
        let from = env[0]
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (from.name.as_str(), from.key.as_str()),
            ("redis-auth", "redis-password")
        );
        let args = c.args.as_deref().unwrap();
        assert!(!args.iter().any(|a| a.contains("password")), "{args:?}");
    }
}
