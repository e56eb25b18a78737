//! Path cleaning and the classification table: one row per kind of request, naming its rule.

use super::*;

#[test]
fn the_fast_path_agrees_with_the_full_cleaning() {
    for raw in [
        "/",
        "//",
        "/a",
        "/a/",
        "/a//",
        "//a",
        "/a/./b",
        "/a/../b",
        "/.",
        "/..",
        "/a/.",
        "/a/..",
        "/.a/..b/...",
        "/a%2fb",
        "/a\u{1}b",
        "/a/b.deb",
        "a/b",
        "",
        "/ü",
        "/a\u{85}",
        "/dists/stable/",
        "/a b",
    ] {
        let Ok(clean) = clean_path(raw) else {
            assert!(
                !is_clean(raw),
                "{raw:?} is refused yet passes the fast check"
            );
            continue;
        };
        if is_clean(raw) {
            assert_eq!(clean, raw, "{raw:?}");
        }
        if clean.is_ascii() && !clean.contains('%') {
            assert!(
                is_clean(&clean),
                "{raw:?} cleans to {clean:?}, which the fast check does not accept"
            );
        }
    }
}

#[test]
fn paths_are_cleaned_or_refused() {
    assert_eq!(
        clean_path("/debian//pool/./x").unwrap_err(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        clean_path("/debian//pool///x.deb").unwrap(),
        "/debian/pool/x.deb"
    );
    assert_eq!(
        clean_path("/debian/pool/a%20b%C3%BC.deb").unwrap(),
        "/debian/pool/a bü.deb"
    );
    assert_eq!(
        clean_path("/debian/%2e%2e/etc/passwd").unwrap_err(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        clean_path("/debian/x%00y").unwrap_err(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        clean_path("/debian/%zz").unwrap_err(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        clean_path("/debian/%ff").unwrap_err(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        clean_path(&format!("/{}", "a".repeat(5000))).unwrap_err(),
        StatusCode::URI_TOO_LONG
    );
    assert_eq!(clean_path("/debian/dists/").unwrap(), "/debian/dists/");
}

#[test]
fn only_paths_no_server_reads_as_climbing_are_sent_to_a_fallback_unindexed() {
    #[rustfmt::skip]
    let rows: [(&str, &str, bool); 14] = [
        ("a file", "pool/new.deb", true),
        ("a name needing encoding", "pool/a bü?#.deb", true),
        ("a directory", "pool/new/", true),
        ("dots inside and in front of names", "pool/.hidden/a..b/x.", true),
        ("a `;` after a name", "pool/a;v=1", true),
        ("the root is listed, not sent", "", false),
        ("a backslash (a Windows separator)", "pool\\..\\x", false),
        ("a `%` (decoded twice: `%2e%2e`)", "pool/%2e%2e/x", false),
        ("an encoded slash decoded twice", "pool%2fx", false),
        ("`..;` (a Java parent)", "pool/..;/x", false),
        ("`;` alone before a name", "pool/;x/y", false),
        ("`...` (a Windows parent)", "pool/.../x", false),
        ("`.. ` (a Windows parent)", "pool/.. /x", false),
        ("a `..` that cleaning would have refused", "../x", false),
    ];
    for (rule, rel, want) in rows {
        assert_eq!(fallback_safe(rel), want, "{rule}: {rel:?}");
    }
}

mod classify {
    use std::collections::HashMap;
    use std::sync::Arc;

    use mirrorfleet_crds::state::index::FileRecord;
    use mirrorfleet_crds::state::{FileIndex, FleetState, ProjectState};

    use super::*;

    /// Project `p` at `/p/` (and host `get.example.org`): `pool/a.deb` and a real
    /// `pool/x.sha256`. Project `q` at `/q/`: a real `mirrors.list`.
    fn snapshot() -> Snapshot {
        let index = |project: &str, paths: &[&str]| {
            let records = paths
                .iter()
                .map(|p| FileRecord {
                    path: (*p).into(),
                    size: 1,
                    mtime: 1,
                    digests: vec![None],
                })
                .collect();
            Arc::new(FileIndex::build(
                project,
                "s1",
                &[HashKind::Sha256],
                records,
                None,
            ))
        };
        let fleet = FleetState {
            projects: vec![
                ProjectState {
                    name: "p".into(),
                    path_prefix: Some("/p/".into()),
                    hosts: vec!["get.example.org".into()],
                    ..Default::default()
                },
                ProjectState {
                    name: "q".into(),
                    path_prefix: Some("/q/".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let indexes = HashMap::from([
            ("p".to_owned(), index("p", &["pool/a.deb", "pool/x.sha256"])),
            ("q".to_owned(), index("q", &[APT_LIST])),
        ]);
        Snapshot::from_parts(1, &fleet, &indexes, &HashMap::new(), &HashMap::new())
    }

    /// The target `rel` of `project` in `path` (its last occurrence there).
    fn at(project: usize, path: &'static str, rel: &str) -> Target<'static> {
        let start = path.rfind(rel).unwrap();
        Target {
            project,
            path: Cow::Borrowed(path),
            rel: (start, start + rel.len()),
            https_only: false,
        }
    }

    fn a_deb(path: &'static str) -> Target<'static> {
        at(0, path, "pool/a.deb")
    }

    fn stats(period: Option<&str>) -> Ask<'static> {
        Ask::FileStats(filestats::Ask {
            project: "p".into(),
            path: "pool/a.deb".into(),
            period: period.map(Into::into),
        })
    }

    const JSON: &[(&str, &str)] = &[("accept", "application/json")];

    /// The rule, the request (method, URI, headers), the snapshot it meets, what it asks.
    type Row<'s> = (
        &'static str,
        Method,
        &'static str,
        &'static [(&'static str, &'static str)],
        &'s Snapshot,
        Ask<'static>,
    );

    #[test]
    fn each_kind_of_request_by_its_rule() {
        let loaded = snapshot();
        let unloaded = Snapshot::default();
        let ip = |s: &str| s.parse().ok();
        let get = Method::GET;
        #[rustfmt::skip]
        let rows: Vec<Row<'_>> = vec![
            ("/healthz answers any method", Method::POST, "/healthz", &[], &loaded, Ask::Health),
            ("/readyz", get.clone(), "/readyz", &[], &unloaded, Ask::Ready),
            ("/metrics", get.clone(), "/metrics", &[], &loaded, Ask::Metrics),
            ("?mirrorstats on any path", get.clone(), "/x?mirrorstats", &[], &loaded,
                Ask::Mirrorstats { json: false }),
            ("?mirrorstats on a path with a dot segment: refused as anywhere", get.clone(),
                "/alpha/../?mirrorstats", &[], &loaded, Ask::BadPath(StatusCode::BAD_REQUEST)),
            ("?mirrorstats&json", get.clone(), "/?mirrorstats&json", &[], &loaded,
                Ask::Mirrorstats { json: true }),
            ("?mirrorstats, Accept: application/json", get.clone(), "/?mirrorstats", JSON, &loaded,
                Ask::Mirrorstats { json: true }),
            ("a mirror's duties", get.clone(), "/-/mirrors/m1.json", &[], &loaded,
                Ask::Duties { mirror: "m1" }),
            ("a mirror's duties, before a fleet is loaded", get.clone(), "/-/mirrors/m1.json",
                &[], &unloaded, Ask::NotLoaded),
            ("duties: GET and HEAD only", Method::POST, "/-/mirrors/m1.json", &[], &loaded,
                Ask::MethodNotAllowed),
            ("?stats on a file", get.clone(), "/p/pool/a.deb?stats", &[], &loaded, stats(None)),
            ("?stats=<period> on a file", get.clone(), "/p/pool/a.deb?stats=2026-11", &[], &loaded,
                stats(Some("2026-11"))),
            ("?stats=<not a period>, wherever", get.clone(), "/healthz?stats=soon", &[], &loaded,
                Ask::BadPeriod),
            ("?stats on a file not in the index: no counts", get.clone(), "/p/pool/b.deb?stats",
                &[], &loaded, Ask::StatsUnindexed { at: at(0, "/p/pool/b.deb", "pool/b.deb") }),
            ("?stats&json on a file not in the index: the JSON answer", get.clone(),
                "/p/pool/b.deb?stats&json", &[], &loaded,
                Ask::Json { at: at(0, "/p/pool/b.deb", "pool/b.deb") }),
            ("?stats on a directory: classified without it", get.clone(), "/p/pool/?stats", &[],
                &loaded, Ask::Listing { at: at(0, "/p/pool/", "pool/"), json: false }),
            ("?stats with another method: classified without it", Method::POST,
                "/p/pool/a.deb?stats", &[], &loaded, Ask::MethodNotAllowed),
            ("only GET and HEAD", Method::DELETE, "/p/pool/a.deb", &[], &loaded,
                Ask::MethodNotAllowed),
            ("HEAD as GET", Method::HEAD, "/p/pool/a.deb", &[], &loaded,
                Ask::Download { at: a_deb("/p/pool/a.deb") }),
            ("a .. segment is refused", get.clone(), "/p/../etc/passwd", &[], &loaded,
                Ask::BadPath(StatusCode::BAD_REQUEST)),
            ("no fleet loaded yet", get.clone(), "/p/pool/a.deb", &[], &unloaded, Ask::NotLoaded),
            ("no project at the path", get.clone(), "/nope/a.deb", &[], &loaded, Ask::NoProject),
            ("a project's root is listed", get.clone(), "/p/", &[], &loaded,
                Ask::Listing { at: at(0, "/p/", ""), json: false }),
            ("a directory is listed, as JSON when asked", get.clone(), "/p/pool/?json", &[],
                &loaded, Ask::Listing { at: at(0, "/p/pool/", "pool/"), json: true }),
            ("mirrors.list at the root: the apt list", get.clone(), "/p/mirrors.list", &[], &loaded,
                Ask::AptList { at: at(0, "/p/mirrors.list", APT_LIST), from: None }),
            ("the apt list for ?mirrorlist&fromip", get.clone(),
                "/p/mirrors.list?mirrorlist&fromip=198.51.100.7", &[], &loaded,
                Ask::AptList { at: at(0, "/p/mirrors.list", APT_LIST), from: ip("198.51.100.7") }),
            ("a real mirrors.list is downloaded", get.clone(), "/q/mirrors.list", &[], &loaded,
                Ask::Download { at: at(1, "/q/mirrors.list", APT_LIST) }),
            ("?sha256: the checksum", get.clone(), "/p/pool/a.deb?sha256", &[], &loaded,
                Ask::Checksum { at: a_deb("/p/pool/a.deb"), kind: HashKind::Sha256 }),
            ("<file>.sha1: the checksum", get.clone(), "/p/pool/a.deb.sha1", &[], &loaded,
                Ask::Checksum { at: a_deb("/p/pool/a.deb.sha1"), kind: HashKind::Sha1 }),
            ("a real .sha256 file is downloaded", get.clone(), "/p/pool/x.sha256", &[], &loaded,
                Ask::Download { at: at(0, "/p/pool/x.sha256", "pool/x.sha256") }),
            ("<not a file>.sha256 is a download (the origin may have published it)", get.clone(),
                "/p/pool/b.deb.sha256", &[], &loaded,
                Ask::Download { at: at(0, "/p/pool/b.deb.sha256", "pool/b.deb.sha256") }),
            ("<not a file>.meta4: the metalink of a file the index may not know yet", get.clone(),
                "/p/pool/b.deb.meta4", &[], &loaded,
                Ask::Metalink { at: at(0, "/p/pool/b.deb.meta4", "pool/b.deb") }),
            ("<directory>/.meta4 names no file", get.clone(), "/p/pool/.meta4", &[], &loaded,
                Ask::Download { at: at(0, "/p/pool/.meta4", "pool/.meta4") }),
            ("a checksum beats the mirror list", get.clone(), "/p/pool/a.deb?mirrorlist&md5", &[],
                &loaded, Ask::Checksum { at: a_deb("/p/pool/a.deb"), kind: HashKind::Md5 }),
            ("?mirrorlist: the mirror list", get.clone(), "/p/pool/a.deb?mirrorlist", &[], &loaded,
                Ask::Mirrorlist { at: a_deb("/p/pool/a.deb"), from: None }),
            ("?mirrorlist&fromip: for that client", get.clone(),
                "/p/pool/a.deb?mirrorlist&fromip=2001:db8::1", &[], &loaded,
                Ask::Mirrorlist { at: a_deb("/p/pool/a.deb"), from: ip("2001:db8::1") }),
            ("?mirrorlist&fromip=<not an address>: for the client", get.clone(),
                "/p/pool/a.deb?mirrorlist&fromip=x", &[], &loaded,
                Ask::Mirrorlist { at: a_deb("/p/pool/a.deb"), from: None }),
            ("the mirror list beats a metalink", get.clone(), "/p/pool/a.deb.meta4?mirrorlist", &[],
                &loaded, Ask::Mirrorlist { at: a_deb("/p/pool/a.deb.meta4"), from: None }),
            ("<file>.meta4: the metalink", get.clone(), "/p/pool/a.deb.meta4", &[], &loaded,
                Ask::Metalink { at: a_deb("/p/pool/a.deb.meta4") }),
            ("?metalink: the metalink", get.clone(), "/p/pool/a.deb?metalink", &[], &loaded,
                Ask::Metalink { at: a_deb("/p/pool/a.deb") }),
            ("?meta4: the metalink", get.clone(), "/p/pool/a.deb?meta4", &[], &loaded,
                Ask::Metalink { at: a_deb("/p/pool/a.deb") }),
            ("Accept: metalink", get.clone(), "/p/pool/a.deb", &[("accept", METALINK)], &loaded,
                Ask::Metalink { at: a_deb("/p/pool/a.deb") }),
            ("a metalink beats JSON", get.clone(), "/p/pool/a.deb.meta4?json", &[], &loaded,
                Ask::Metalink { at: a_deb("/p/pool/a.deb.meta4") }),
            ("?json: the JSON answer", get.clone(), "/p/pool/a.deb?json", &[], &loaded,
                Ask::Json { at: a_deb("/p/pool/a.deb") }),
            ("Accept: application/json", get.clone(), "/p/pool/a.deb", JSON, &loaded,
                Ask::Json { at: a_deb("/p/pool/a.deb") }),
            ("fromip without ?mirrorlist is not looked at", get.clone(),
                "/p/pool/a.deb?json&fromip=198.51.100.7", &[], &loaded,
                Ask::Json { at: a_deb("/p/pool/a.deb") }),
            ("anything else: the download", get.clone(), "/p/pool/a.deb", &[], &loaded,
                Ask::Download { at: a_deb("/p/pool/a.deb") }),
            ("a file not in the index: the download (from a fallback)", get.clone(), "/p/pool/b.deb",
                &[], &loaded, Ask::Download { at: at(0, "/p/pool/b.deb", "pool/b.deb") }),
            ("?https=1: HTTPS mirrors only", get.clone(), "/p/pool/a.deb?https=1", &[], &loaded,
                Ask::Download { at: Target { https_only: true, ..a_deb("/p/pool/a.deb") } }),
            ("routed by host name", get.clone(), "/pool/a.deb", &[("host", "Get.Example.org:80")],
                &loaded, Ask::Download { at: a_deb("/pool/a.deb") }),
            ("a path cleaned first", get.clone(), "/p//pool/a%2Edeb", &[], &loaded,
                Ask::Download { at: a_deb("/p/pool/a.deb") }),
        ];
        for (rule, method, uri, headers, snap, want) in rows {
            let uri: Uri = uri.parse().unwrap();
            let mut map = HeaderMap::new();
            for (k, v) in headers {
                map.insert(
                    header::HeaderName::from_static(k),
                    header::HeaderValue::from_static(v),
                );
            }
            assert_eq!(classify(&method, &uri, &map, snap), want, "{rule}");
        }
    }

    #[test]
    fn the_download_borrows_its_path() {
        let snap = snapshot();
        let uri: Uri = "/p/pool/a.deb".parse().unwrap();
        let Ask::Download { at } = classify(&Method::GET, &uri, &HeaderMap::new(), &snap) else {
            panic!("not a download");
        };
        assert!(
            matches!(at.path, Cow::Borrowed(_)),
            "no copy of a clean path"
        );
        assert_eq!(at.rel(), "pool/a.deb");
    }
}
