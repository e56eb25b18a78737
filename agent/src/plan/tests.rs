use super::*;

fn duty() -> ProjectDuty {
    ProjectDuty {
        project: "demo".into(),
        directory: "demo/".into(),
        ..Default::default()
    }
}

fn strings(args: &[OsString]) -> Vec<String> {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn paces_in_kib() {
    let cases = [
        (
            "200 Mbit/s, what micro mirrors run with (25 MB/s)",
            200,
            24_414,
        ),
        ("8 Mbit/s", 8, 976),
        ("never 0, rsync's unlimited", 0, 1),
    ];
    for (rule, mbps, want) in cases {
        assert_eq!(bwlimit_kib(mbps), want, "{rule}");
    }
}

#[test]
fn filters_follow_the_carried_sub_trees() {
    let mut d = duty();
    assert!(filters(&d, false).is_empty(), "the whole project: no rules");
    d.paths = vec![
        "isos/".into(),
        "releases/1.0/".into(),
        "releases/2.0/".into(),
    ];
    assert_eq!(
        filters(&d, false),
        [
            "--include=/isos/***",
            "--include=/releases/",
            "--include=/releases/1.0/***",
            "--include=/releases/2.0/***",
            "--exclude=*",
        ],
        "each sub-tree, its parents once, nothing else"
    );
    d.paths.push("/".into());
    assert!(
        filters(&d, false).is_empty(),
        "a root path: the whole project"
    );
}

#[test]
fn filters_keep_the_trace_and_skip_the_index_in_stage_one() {
    let mut d = duty();
    d.trace_file = Some("project/trace/master".into());
    d.index_globs = vec!["**/repomd.xml".into(), "dists/*/InRelease".into()];
    d.paths = vec!["dists/".into()];
    assert_eq!(
        filters(&d, true),
        [
            "--exclude=/project/trace/master",
            "--exclude=repomd.xml",
            "--exclude=/dists/*/InRelease",
            "--include=/dists/***",
            "--exclude=*",
        ]
    );
    assert_eq!(
        filters(&d, false),
        [
            "--exclude=/project/trace/master",
            "--include=/dists/***",
            "--exclude=*",
        ],
        "the last stage syncs the index"
    );
}

#[test]
fn one_stage_or_two() {
    let pacing = Pacing {
        bwlimit_kib: 976,
        io_timeout: Duration::from_secs(60),
    };
    let mut d = duty();
    let one = stages(&d, "rsync://hub/demo", Path::new("/srv/demo"), &pacing);
    assert_eq!(one.len(), 1);
    let a = strings(&one[0]);
    for want in [
        "--delay-updates",
        "--bwlimit=976",
        "--timeout=60",
        "--contimeout=60",
        "--delete-delay",
    ] {
        assert!(a.iter().any(|x| x == want), "{want} in {a:?}");
    }
    assert_eq!(
        a[a.len() - 2..],
        ["rsync://hub/demo/", "/srv/demo/"],
        "source and destination last, as directories"
    );

    d.index_globs = vec!["**/repomd.xml".into()];
    let two = stages(&d, "rsync://hub/demo/", Path::new("/srv/demo"), &pacing);
    assert_eq!(two.len(), 2);
    let (first, last) = (strings(&two[0]), strings(&two[1]));
    assert!(first.iter().any(|x| x == "--exclude=repomd.xml"));
    assert!(
        !first.iter().any(|x| x.starts_with("--delete")),
        "no deletions first"
    );
    assert!(!last.iter().any(|x| x == "--exclude=repomd.xml"));
    assert!(last.iter().any(|x| x == "--delete-delay"));
    assert!(
        first
            .iter()
            .chain(&last)
            .filter(|x| *x == "--delay-updates")
            .count()
            == 2
    );
}

#[test]
fn stats_and_exit_codes() {
    let out = "Number of files: 3\nTotal bytes sent: 120\nTotal bytes received: 4,195,390\n";
    assert_eq!(bytes_received(out), Some(4_195_390));
    assert_eq!(bytes_received("rsync: garbage"), None);
    assert!(exit_meaning(10).contains("socket"));
    assert!(exit_meaning(30).contains("timeout"));
    assert_eq!(tail("abcdef", 3), "def");
    assert_eq!(tail("ééé", 3), "é", "cut at a character boundary");
}

#[test]
fn reports_parse_as_the_redirectors_read_them() {
    let r = Report {
        project: "demo".into(),
        serial: "42".into(),
        duration_seconds: 1.5,
        bytes: 10,
        result: "ok",
        error: None,
    };
    let json = serde_json::to_vec(&r).expect("serialises");
    let read =
        mirrorfleet_push::report::parse("mirrorfleet/report", "mirrorfleet/report/m1", &json)
            .expect("the report readers take it, extra fields and all");
    assert_eq!(
        (
            read.mirror.as_str(),
            read.project.as_str(),
            read.serial.as_str()
        ),
        ("m1", "demo", "42")
    );
    let text = String::from_utf8(json).expect("UTF-8");
    assert!(
        text.contains("\"durationSeconds\":1.5") && !text.contains("error"),
        "{text}"
    );
}

#[test]
fn trace_is_what_scans_parse() {
    let t = trace_content(1_795_309_323, "m1", "42");
    assert_eq!(t.lines().next(), Some("1795309323"));
}

#[test]
fn fallback_spreads_within_the_jitter() {
    let every = Duration::from_secs(6 * 3600);
    let lo = next_fallback(every, 0.1, 0);
    let hi = next_fallback(every, 0.1, 1_000_000);
    let mid = next_fallback(every, 0.1, 500_000);
    assert_eq!(lo, every.mul_f64(0.9));
    assert_eq!(hi, every.mul_f64(1.1));
    assert_eq!(mid, every);
    assert_eq!(next_fallback(every, 0.0, 12345), every);
}

#[test]
fn push_payloads() {
    assert_eq!(push_serial(b" 20261202.1\n"), Ok("20261202.1"));
    for bad in [&b""[..], b"   ", b"\xff\xfe", b"a\x00b", &[b'x'; 300]] {
        assert!(push_serial(bad).is_err(), "{bad:?}");
    }
}
