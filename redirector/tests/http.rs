//! The redirector over real HTTP: an embedded store with a small fleet, GeoIP databases
//! written by the test, the server on a loopback port, and a real HTTP client.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mirrorfleet_crds::state::index::FileRecord;
use mirrorfleet_crds::state::stats;
use mirrorfleet_crds::state::{
    Availability, FallbackState, Family, FileIndex, FleetState, HashKind, HealthState,
    MirrorHealth, MirrorState, ProbeScheme, ProjectState, SponsorState,
};
use mirrorfleet_geo::Geo;
use mirrorfleet_redirector::server::{self, Config};
use mirrorfleet_store::{EmbeddedStore, StateWriter, Store};
use mirrorfleet_testkit::{wait_for, within};

#[derive(serde::Serialize)]
struct Code {
    code: String,
}
#[derive(serde::Serialize)]
struct Iso {
    iso_code: String,
}
#[derive(serde::Serialize)]
struct Loc {
    latitude: f64,
    longitude: f64,
}
#[derive(serde::Serialize)]
struct City {
    continent: Code,
    country: Iso,
    location: Loc,
}
#[derive(serde::Serialize)]
struct Asn {
    autonomous_system_number: u32,
    autonomous_system_organization: String,
}

fn geoip(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    geoip_with(dir, ("FR", 48.85, 2.35))
}

/// The test databases, with 192.0.2.0/24 placed at (country, latitude, longitude). Files are
/// written aside and renamed into place, as a database updater does.
fn geoip_with(
    dir: &std::path::Path,
    documentation_net: (&str, f64, f64),
) -> (std::path::PathBuf, std::path::PathBuf) {
    let city = |cc: &str, cont: &str, lat, lon| City {
        continent: Code { code: cont.into() },
        country: Iso {
            iso_code: cc.into(),
        },
        location: Loc {
            latitude: lat,
            longitude: lon,
        },
    };
    let mut w = mmdb_writer::Writer::builder("GeoIP2-City")
        .languages(["en"])
        .description(&[("en", "test")])
        .build();
    w.insert(
        "192.0.2.0/24".parse::<ipnet::IpNet>().unwrap(),
        &city(
            documentation_net.0,
            "EU",
            documentation_net.1,
            documentation_net.2,
        ),
    )
    .unwrap();
    w.insert(
        "198.51.100.0/24".parse::<ipnet::IpNet>().unwrap(),
        &city("DE", "EU", 52.52, 13.40),
    )
    .unwrap();
    w.insert(
        "2001:db8:1::/48".parse::<ipnet::IpNet>().unwrap(),
        &city("DE", "EU", 52.52, 13.40),
    )
    .unwrap();
    let city_path = dir.join("city.mmdb");
    std::fs::write(dir.join("city.mmdb.new"), w.to_bytes().unwrap()).unwrap();
    std::fs::rename(dir.join("city.mmdb.new"), &city_path).unwrap();
    let mut a = mmdb_writer::Writer::builder("GeoLite2-ASN")
        .description(&[("en", "test")])
        .build();
    a.insert(
        "192.0.2.0/24".parse::<ipnet::IpNet>().unwrap(),
        &Asn {
            autonomous_system_number: 64500,
            autonomous_system_organization: "Example".into(),
        },
    )
    .unwrap();
    let asn_path = dir.join("asn.mmdb");
    std::fs::write(&asn_path, a.to_bytes().unwrap()).unwrap();
    (city_path, asn_path)
}

fn mirror(name: &str, cc: &str, lat: f64, lon: f64, http_only: bool) -> MirrorState {
    let m = MirrorState::test(name)
        .in_country(cc)
        .at(lat, lon)
        .carrying("p", format!("http://{name}.example/p/"));
    if http_only {
        m
    } else {
        m.carrying("p", format!("https://{name}.example/p/"))
    }
}

struct Running<S = EmbeddedStore> {
    addr: SocketAddr,
    /// The same server on `[::1]`.
    v6_addr: SocketAddr,
    store: S,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Arc<mirrorfleet_redirector::server::App>>,
    /// (state, GeoIP databases).
    dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl<S> Running<S> {
    /// Stops the server (draining and flushing stats) and returns its state.
    async fn stop(&mut self) -> Arc<mirrorfleet_redirector::server::App> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        within(
            "the redirector to drain and stop",
            Duration::from_secs(30),
            &mut self.done,
        )
        .await
        .unwrap()
    }
}

async fn start() -> Running {
    let state = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(state.path()).unwrap();
    start_with(store, state, Duration::from_secs(30)).await
}

/// The test fleet: project `p` at `/p/` and `get.example.org`, with one fallback; three
/// mirrors of it.
fn test_fleet() -> FleetState {
    FleetState {
        projects: vec![ProjectState {
            name: "p".into(),
            path_prefix: Some("/p/".into()),
            hosts: vec!["get.example.org".into()],
            hashes: vec![HashKind::Sha256],
            fallbacks: vec![FallbackState {
                url: "https://origin.example/p/".into(),
                country: None,
                continent: None,
            }],
            ..Default::default()
        }],
        mirrors: vec![
            mirror("lyon", "FR", 45.76, 4.84, false),
            mirror("berlin", "DE", 52.5, 13.4, false),
            mirror("plain", "NL", 52.37, 4.9, true),
        ],
        sponsors: vec![SponsorState {
            name: "s".into(),
            display_name: "Sponsor".into(),
            ..Default::default()
        }],
        rules: vec![],
    }
}

/// The test fleet written to `store`, and the server reading it (`state` is kept with it).
async fn start_with<S: Store + Clone + 'static>(
    store: S,
    state: tempfile::TempDir,
    resync_every: Duration,
) -> Running<S> {
    let geo_dir = tempfile::tempdir().unwrap();
    let writer = StateWriter::new(store.clone());
    writer.write_fleet(&test_fleet()).await.unwrap();
    let records = vec![
        FileRecord {
            path: "pool/a b.deb".into(),
            size: 3,
            mtime: 1,
            digests: vec![Some(vec![0xab; 32])],
        },
        FileRecord {
            path: "pool/only-origin.deb".into(),
            size: 4,
            mtime: 1,
            digests: vec![None],
        },
    ];
    let index = FileIndex::build("p", "s1", &[HashKind::Sha256], records, None);
    writer.write_index(&index, 1).await.unwrap();
    let a_b = index.find("pool/a b.deb").unwrap().id;
    for m in ["lyon", "berlin", "plain"] {
        let mut a = Availability {
            mirror: m.into(),
            project: "p".into(),
            serial: "s1".into(),
            ..Default::default()
        };
        a.present.insert(a_b);
        writer.write_availability(&a).await.unwrap();
    }
    let (city, asn) = geoip(geo_dir.path());
    let geo = Geo::open(Some(city), Some(asn)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let v6_listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
    let v6_addr = v6_listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = Config {
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap(), "::1/128".parse().unwrap()],
        stats_every: Duration::from_millis(100),
        geo_every: Duration::from_millis(100),
        resync_every,
        ..Config::default()
    };
    let s = store.clone();
    let done = tokio::spawn(async move {
        server::run(vec![listener, v6_listener], s, geo, config, async {
            let _ = stopped.await;
        })
        .await
    });
    let running = Running {
        addr,
        v6_addr,
        store,
        stop: Some(stop),
        done,
        dirs: (state, geo_dir),
    };
    let client = &client();
    wait_for(
        "the redirector to be ready",
        Duration::from_secs(10),
        || async move {
            match client.get(format!("http://{addr}/readyz")).send().await {
                Ok(r) if r.status() == 200 => Ok(()),
                Ok(r) => Err(format!("status {}", r.status())),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    running
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn get<S>(r: &Running<S>, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client().get(format!("http://{}{path}", r.addr));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// `m` down for every scheme and family.
fn down(m: &str) -> MirrorHealth {
    MirrorHealth {
        mirror: m.into(),
        entries: [Family::Ipv4, Family::Ipv6]
            .into_iter()
            .flat_map(|f| {
                [ProbeScheme::Http, ProbeScheme::Https].map(|s| HealthState {
                    scheme: s,
                    family: f,
                    up: false,
                    reason: "ConnectRefused".into(),
                    since: 1,
                })
            })
            .collect(),
    }
}

/// The server's `mirrorfleet_requests_total` for `outcome`, from `/metrics`.
async fn requests_counted<S>(r: &Running<S>, outcome: &str) -> u64 {
    let metrics = get(r, "/metrics", &[]).await.text().await.unwrap();
    let line = format!("mirrorfleet_requests_total{{outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line}in {metrics}"))
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_answers_and_stats() {
    // Counts are per UTC day: the whole test runs within one.
    mirrorfleet_testkit::clear_of_midnight(Duration::from_secs(90));
    let mut r = start().await;
    let paris = [("x-forwarded-for", "192.0.2.7")];
    let resp = get(&r, "/p/pool/a%20b.deb", &paris).await;
    assert_eq!(resp.status(), 302);
    assert_eq!(
        location(&resp),
        "https://lyon.example/p/pool/a%20b.deb",
        "a Paris client goes to Lyon over HTTPS"
    );
    // The snapshot served says when it was built (the dashboard's snapshot age).
    let metrics = get(&r, "/metrics", &[]).await.text().await.unwrap();
    let built: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mirrorfleet_snapshot_timestamp_seconds "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no mirrorfleet_snapshot_timestamp_seconds in {metrics}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now - 60..=now).contains(&built),
        "built at {built}, now {now}"
    );
    assert_eq!(resp.headers()["cache-control"], "private, no-cache");
    assert_eq!(
        resp.headers()["digest"],
        "SHA-256=q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s="
    );
    assert_eq!(
        resp.headers()["repr-digest"],
        "sha-256=:q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=:"
    );
    let links: Vec<&str> = resp
        .headers()
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        links.iter().any(|l| l
            .starts_with("<https://berlin.example/p/pool/a%20b.deb>; rel=duplicate; pri=")
            && l.ends_with("geo=de")),
        "{links:?}"
    );

    let berlin = get(
        &r,
        "/p/pool/a%20b.deb",
        &[("x-forwarded-for", "198.51.100.9")],
    )
    .await;
    assert_eq!(location(&berlin), "https://berlin.example/p/pool/a%20b.deb");
    let by_host = client()
        .get(format!("http://{}/pool/a%20b.deb", r.addr))
        .header("host", "get.example.org")
        .header("x-forwarded-for", "192.0.2.7")
        .send()
        .await
        .unwrap();
    assert_eq!(
        location(&by_host),
        "https://lyon.example/p/pool/a%20b.deb",
        "host routing"
    );

    let json: serde_json::Value = get(
        &r,
        "/p/pool/a%20b.deb",
        &[
            ("x-forwarded-for", "192.0.2.7"),
            ("accept", "application/json"),
        ],
    )
    .await
    .text()
    .await
    .map(|t| serde_json::from_str(&t).unwrap())
    .unwrap();
    assert_eq!(json["mirror"]["name"], "lyon");
    assert_eq!(json["client"]["country"], "FR");
    assert_eq!(json["client"]["asn"], 64500);
    assert_eq!(json["file"]["sha256"], "ab".repeat(32));
    assert_eq!(json["alternatives"].as_array().unwrap().len(), 2);

    let html = get(&r, "/p/pool/a%20b.deb?mirrorlist", &paris)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("lyon") && html.contains("berlin") && html.contains("Size: 3 bytes"),
        "{html}"
    );
    assert!(
        html.contains("<a href=\"a%20b.deb.meta4\">a b.deb.meta4</a>"),
        "{html}"
    );
    let sum = get(&r, "/p/pool/a%20b.deb?sha256", &[])
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(sum, format!("{}  a b.deb\n", "ab".repeat(32)));

    let unindexed = get(&r, "/p/pool/missing.deb", &[]).await;
    assert_eq!(
        (unindexed.status().as_u16(), location(&unindexed)),
        (302, "https://origin.example/p/pool/missing.deb".to_owned()),
        "a file the index does not know yet: the origin may have it"
    );
    assert_eq!(
        get(&r, "/p/pool/..%2f..%2fetc/passwd", &[]).await.status(),
        400
    );
    assert_eq!(get(&r, "/nowhere/x", &[]).await.status(), 404);
    let fallback = get(&r, "/p/pool/only-origin.deb", &paris).await;
    assert_eq!(
        (fallback.status().as_u16(), location(&fallback)),
        (
            302,
            "https://origin.example/p/pool/only-origin.deb".to_owned()
        )
    );
    let post = client()
        .post(format!("http://{}/p/pool/a%20b.deb", r.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    let head = client()
        .head(format!("http://{}/p/pool/a%20b.deb", r.addr))
        .header("x-forwarded-for", "192.0.2.7")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 302);

    // A client behind an HTTPS proxy never gets the HTTP-only mirror, whatever the draw.
    for _ in 0..20 {
        let resp = get(&r, "/p/pool/a%20b.deb", &[("x-forwarded-proto", "https")]).await;
        assert!(
            location(&resp).starts_with("https://"),
            "{}",
            location(&resp)
        );
    }

    // A mirror going down stops receiving redirects within about a second.
    let writer = StateWriter::new(r.store.clone());
    writer.write_health(&down("lyon")).await.unwrap();
    let rr = &r;
    wait_for(
        "lyon to leave rotation",
        Duration::from_secs(2),
        || async move {
            let now = location(&get(rr, "/p/pool/a%20b.deb", &paris).await);
            if now.contains("lyon") {
                Err(now)
            } else {
                Ok(())
            }
        },
    )
    .await;
    assert!(requests_counted(&r, "redirect").await > 0);

    // Shutdown flushes the stats.
    let app = r.stop().await;
    assert!(
        app.metrics
            .requests(mirrorfleet_redirector::metrics::Outcome::Redirect)
            >= 25
    );
    let day = chrono_day();
    let per_mirror = r
        .store
        .read_stats(&stats::day_key(&day, "mirror"))
        .await
        .unwrap();
    let total: u64 = per_mirror.values().sum();
    assert!(total >= 25, "{per_mirror:?}");
    let files = r
        .store
        .read_stats(&stats::day_key(&day, "file:p"))
        .await
        .unwrap();
    assert!(
        files.get("pool/a b.deb").copied().unwrap_or(0) >= 24,
        "{files:?}"
    );
    // Every dimension counts the same redirects.
    let countries: u64 = r
        .store
        .read_stats(&stats::day_key(&day, "country"))
        .await
        .unwrap()
        .values()
        .sum();
    let totals = r.store.read_stats(&stats::total_key()).await.unwrap();
    assert_eq!(countries, total);
    assert_eq!(totals.get("redirects").copied(), Some(total), "{totals:?}");
    let bytes: u64 = r
        .store
        .read_stats(&stats::day_key(&day, "bytes"))
        .await
        .unwrap()
        .values()
        .sum();
    assert_eq!(totals.get("bytes").copied(), Some(bytes), "{totals:?}");
    assert!(bytes > 0);
}

fn chrono_day() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%d"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metalinks_and_checksum_file_names() {
    let mut r = start().await;
    let paris = [("x-forwarded-for", "192.0.2.7")];

    // Every redirect points to its metalink (RFC 6249 describedby).
    let resp = get(&r, "/p/pool/a%20b.deb", &paris).await;
    assert_eq!(resp.status(), 302);
    let links: Vec<String> = resp
        .headers()
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        links.contains(
            &"</p/pool/a%20b.deb.meta4>; rel=describedby; type=\"application/metalink4+xml\""
                .to_owned()
        ),
        "{links:?}"
    );

    // `<file>.meta4`: size, hash, and every mirror ranked for this client.
    let resp = get(&r, "/p/pool/a%20b.deb.meta4", &paris).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/metalink4+xml");
    assert_eq!(
        resp.headers()["content-disposition"],
        "attachment; filename=\"a b.deb.meta4\""
    );
    let meta4 = resp.text().await.unwrap();
    assert!(meta4.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">"), "{meta4}");
    assert!(meta4.contains("<file name=\"a b.deb\">"), "{meta4}");
    assert!(meta4.contains("<size>3</size>"), "{meta4}");
    assert!(
        meta4.contains(&format!(
            "<hash type=\"sha-256\">{}</hash>",
            "ab".repeat(32)
        )),
        "{meta4}"
    );
    let urls: Vec<&str> = meta4.lines().filter(|l| l.contains("<url")).collect();
    assert_eq!(urls.len(), 3, "{meta4}");
    assert_eq!(
        urls[0].trim(),
        "<url location=\"fr\" priority=\"1\">https://lyon.example/p/pool/a%20b.deb</url>",
        "the nearest mirror first"
    );
    assert!(urls[1].contains("priority=\"2\"") && urls[2].contains("priority=\"3\""));
    assert!(
        urls.iter()
            .any(|u| u.contains(">http://plain.example/p/pool/a%20b.deb<")),
        "an HTTP-only mirror is listed for an HTTP client: {meta4}"
    );

    // The same document by query and by Accept; HEAD has no body.
    let by_query = get(&r, "/p/pool/a%20b.deb?metalink", &paris).await;
    assert_eq!(by_query.text().await.unwrap(), meta4);
    let by_accept = get(
        &r,
        "/p/pool/a%20b.deb",
        &[paris[0], ("accept", "application/metalink4+xml")],
    )
    .await;
    assert_eq!(by_accept.status(), 200);
    assert_eq!(by_accept.text().await.unwrap(), meta4);
    let head = client()
        .head(format!("http://{}/p/pool/a%20b.deb.meta4", r.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.bytes().await.unwrap().len(), 0);

    // No mirror holds this one: the fallback is listed instead.
    let origin = get(&r, "/p/pool/only-origin.deb.meta4", &paris).await;
    let origin = origin.text().await.unwrap();
    assert!(
        origin.contains("<url priority=\"1\">https://origin.example/p/pool/only-origin.deb</url>"),
        "{origin}"
    );

    // `<file>.sha256` answers like `?sha256`; unknown files stay 404.
    let sum = get(&r, "/p/pool/a%20b.deb.sha256", &[]).await;
    assert_eq!(sum.status(), 200);
    assert_eq!(
        sum.text().await.unwrap(),
        format!("{}  a b.deb\n", "ab".repeat(32))
    );
    assert_eq!(get(&r, "/p/pool/a%20b.deb.md5", &[]).await.status(), 404);
    // A file the index does not have (yet): its metalink names the fallback, and a checksum
    // name may be a file the origin published beside it.
    let unindexed = get(&r, "/p/pool/nothing.deb.meta4", &[]).await;
    assert_eq!(unindexed.status(), 200);
    let unindexed = unindexed.text().await.unwrap();
    assert!(
        unindexed.contains("<url priority=\"1\">https://origin.example/p/pool/nothing.deb</url>"),
        "{unindexed}"
    );
    let sum_file = get(&r, "/p/pool/nothing.deb.sha256", &[]).await;
    assert_eq!(
        (sum_file.status().as_u16(), location(&sum_file)),
        (
            302,
            "https://origin.example/p/pool/nothing.deb.sha256".to_owned()
        )
    );
    assert_eq!(
        get(&r, "/p/pool/nothing.deb?sha256", &[]).await.status(),
        404,
        "no hash is known"
    );

    assert_eq!(requests_counted(&r, "metalink").await, 6);
    r.stop().await;
    // Metalinks are not downloads: only the two redirects above were counted.
    let totals = r.store.read_stats(&stats::total_key()).await.unwrap();
    assert_eq!(totals.get("redirects").copied(), Some(2), "{totals:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirrors_duties_are_described_for_its_agent() {
    let mut r = start().await;
    let resp = get(&r, "/-/mirrors/lyon.json", &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let d: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(d["mirror"], "lyon", "{d:#}");
    assert_eq!(
        d["paceMbps"], 200,
        "no bandwidth declared: the default pace"
    );
    let p = &d["projects"][0];
    assert_eq!(p["project"], "p");
    assert_eq!(p["directory"], "p/");
    assert_eq!(p["serial"], "s1", "the index's serial");
    assert_eq!(p["hubRsync"], serde_json::Value::Null, "no rsync source");
    let text = d.to_string();
    assert!(
        !text.contains("lyon.example"),
        "the mirror's own URLs stay out: {text}"
    );
    assert_eq!(get(&r, "/-/mirrors/nowhere.json", &[]).await.status(), 404);
    assert!(requests_counted(&r, "duties").await >= 1);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrorstats_shows_the_fleet_and_todays_counts() {
    // Counts are per UTC day: the whole test runs within one.
    mirrorfleet_testkit::clear_of_midnight(Duration::from_secs(90));
    let mut r = start().await;
    let paris = [("x-forwarded-for", "192.0.2.7")];
    for _ in 0..3 {
        assert!(location(&get(&r, "/p/pool/a%20b.deb", &paris).await).contains("lyon"));
    }
    // The counts are read back from the store by the stats task (every ten flushes here).
    let rr = &r;
    let page = wait_for(
        "today's redirects to reach 3",
        Duration::from_secs(10),
        || async move {
            let resp = get(rr, "/anything?mirrorstats&json", &[]).await;
            assert_eq!(resp.status(), 200);
            let page: serde_json::Value =
                serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
            if page["today"]["redirects"] == 3 {
                Ok(page)
            } else {
                Err(format!("{page:#}"))
            }
        },
    )
    .await;
    assert_eq!(page["day"], chrono_day());
    let mirrors = page["mirrors"].as_array().unwrap();
    assert_eq!(mirrors.len(), 3);
    let lyon = &mirrors[0];
    assert_eq!(lyon["name"], "lyon", "most redirects first: {page:#}");
    assert_eq!(lyon["today"]["redirects"], 3);
    assert_eq!(lyon["today"]["bytes"], 9);
    assert_eq!(lyon["sponsor"], "Sponsor");
    assert_eq!(lyon["country"], "FR");
    assert_eq!(lyon["projects"][0]["https"], "https://lyon.example/p/");
    assert_eq!(
        lyon["health"].as_array().unwrap().len(),
        4,
        "http and https over both families"
    );
    assert_eq!(lyon["health"][0]["up"], serde_json::Value::Null);
    let plain = mirrors.iter().find(|m| m["name"] == "plain").unwrap();
    assert_eq!(
        plain["health"].as_array().unwrap().len(),
        2,
        "an HTTP-only mirror has no HTTPS probes"
    );
    let text = page.to_string();
    for private in ["rsync", "contact", "notes", "networks"] {
        assert!(!text.contains(private), "{private} leaked: {text}");
    }

    let html = get(&r, "/p/pool/a%20b.deb?mirrorstats", &[]).await;
    assert_eq!(html.status(), 200);
    assert_eq!(html.headers()["content-type"], "text/html; charset=utf-8");
    let html = html.text().await.unwrap();
    assert!(html.contains("<td>lyon</td>"), "{html}");
    assert!(html.contains("3 redirects"), "{html}");
    let post = client()
        .post(format!("http://{}/?mirrorstats", r.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    assert!(requests_counted(&r, "mirrorstats").await > 0);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apt_mirror_lists_rank_whole_project_mirrors_for_the_client() {
    let mut r = start().await;
    let paris = ("x-forwarded-for", "192.0.2.7");
    let resp = get(&r, "/p/mirrors.list", &[paris]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(resp.headers()["cache-control"], "private, no-cache");
    let list = resp.text().await.unwrap();
    let lines: Vec<&str> = list.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines.first(),
        Some(&"https://lyon.example/p/\tpriority:1"),
        "{list}"
    );
    assert_eq!(lines.len(), 3, "{list}");
    assert!(
        lines.contains(&"http://plain.example/p/\tpriority:2")
            || lines.contains(&"http://plain.example/p/\tpriority:3"),
        "{list}"
    );
    assert!(
        list.starts_with("# mirrorfleet: mirrors of p for 192.0.2.7 (country FR)"),
        "{list}"
    );

    // A client that came over HTTPS gets HTTPS mirrors only.
    let https = get(
        &r,
        "/p/mirrors.list",
        &[paris, ("x-forwarded-proto", "https")],
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(!https.contains("plain.example"), "{https}");
    assert!(
        https.contains("https://berlin.example/p/\tpriority:2"),
        "{https}"
    );

    // A copy that differs from the index (mid-sync) goes after the complete ones.
    let writer = StateWriter::new(r.store.clone());
    let mut behind = Availability {
        mirror: "lyon".into(),
        project: "p".into(),
        serial: "s1".into(),
        ..Default::default()
    };
    behind.counts.mismatched = 1;
    writer.write_availability(&behind).await.unwrap();
    let rr = &r;
    // Last of three: the two complete copies come first, drawn and ranked as before.
    wait_for(
        "lyon to move after the complete copies",
        Duration::from_secs(5),
        || async move {
            let list = get(rr, "/p/mirrors.list", &[paris])
                .await
                .text()
                .await
                .unwrap();
            if list.contains("https://lyon.example/p/\tpriority:3") {
                Ok(())
            } else {
                Err(list)
            }
        },
    )
    .await;

    // `?https=1` asks for the same as an HTTPS client.
    let forced = get(&r, "/p/mirrors.list?https=1", &[paris])
        .await
        .text()
        .await
        .unwrap();
    assert!(!forced.contains("plain.example"), "{forced}");

    // The same list by host routing; a mirror that is down leaves it.
    let by_host = client()
        .get(format!("http://{}/mirrors.list", r.addr))
        .header("host", "get.example.org")
        .header(paris.0, paris.1)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        by_host.contains("https://lyon.example/p/\tpriority:3"),
        "{by_host}"
    );
    writer.write_health(&down("lyon")).await.unwrap();
    let rr = &r;
    let list = wait_for(
        "lyon to leave the list",
        Duration::from_secs(5),
        || async move {
            let list = get(rr, "/p/mirrors.list", &[paris])
                .await
                .text()
                .await
                .unwrap();
            if list.contains("lyon") {
                Err(list)
            } else {
                Ok(list)
            }
        },
    )
    .await;
    assert!(list.contains("priority:1"), "{list}");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_modified_since_spares_a_download() {
    let mut r = start().await;
    let file = "/p/pool/a%20b.deb"; // mtime 1970-01-01T00:00:01Z in the index
    let current = get(
        &r,
        file,
        &[("if-modified-since", "Sun, 22 Nov 2026 00:00:00 GMT")],
    )
    .await;
    assert_eq!(current.status(), 304);
    assert_eq!(
        current.headers()["last-modified"],
        "Thu, 01 Jan 1970 00:00:01 GMT"
    );
    assert!(current.headers().get("location").is_none());
    // The obsolete RFC 850 form is understood too.
    let rfc850 = get(
        &r,
        file,
        &[("if-modified-since", "Sunday, 22-Nov-26 00:00:00 GMT")],
    )
    .await;
    assert_eq!(rfc850.status(), 304);
    for headers in [
        &[("if-modified-since", "Thu, 01 Jan 1970 00:00:00 GMT")][..],
        &[("if-modified-since", "yesterday")][..],
        &[
            ("if-modified-since", "Sun, 22 Nov 2026 00:00:00 GMT"),
            ("if-none-match", "\"x\""),
        ][..],
    ] {
        assert_eq!(get(&r, file, headers).await.status(), 302, "{headers:?}");
    }
    assert_eq!(requests_counted(&r, "not_modified").await, 2);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_are_listed_from_the_index() {
    let mut r = start().await;
    let root = get(&r, "/p/", &[]).await;
    assert_eq!(root.status(), 200);
    assert_eq!(root.headers()["content-type"], "text/html; charset=utf-8");
    let root = root.text().await.unwrap();
    assert!(root.contains("<title>Index of /p/</title>"), "{root}");
    assert!(root.contains("<a href=\"pool/\">pool/</a>"), "{root}");
    assert!(
        !root.contains("../"),
        "no parent above the project root: {root}"
    );

    let pool = get(&r, "/p/pool/", &[]).await.text().await.unwrap();
    assert!(pool.contains("<a href=\"../\">../</a>"), "{pool}");
    assert!(
        pool.contains(
            "<a href=\"a%20b.deb\">a b.deb</a></td><td class=\"n\">3</td><td>1970-01-01 00:00</td>"
        ),
        "{pool}"
    );
    assert!(pool.contains(">only-origin.deb</a>"), "{pool}");

    let json: serde_json::Value =
        serde_json::from_slice(&get(&r, "/p/pool/?json", &[]).await.bytes().await.unwrap())
            .unwrap();
    assert_eq!(json["path"], "/p/pool/");
    assert_eq!(json["files"][0]["name"], "a b.deb");
    assert_eq!(json["files"][0]["size"], 3);
    assert_eq!(json["files"][0]["sha256"], "ab".repeat(32));
    assert_eq!(json["files"].as_array().unwrap().len(), 2);
    assert_eq!(json["truncated"], false);

    // A directory without its slash is sent to it; one the index does not have, to the
    // origin's listing of it; a file's name with a slash is no directory.
    let bare = get(&r, "/p/pool", &[]).await;
    assert_eq!(bare.status(), 301);
    assert_eq!(location(&bare), "/p/pool/");
    let unindexed = get(&r, "/p/nothing/", &[]).await;
    assert_eq!(
        (unindexed.status().as_u16(), location(&unindexed)),
        (302, "https://origin.example/p/nothing/".to_owned())
    );
    assert_eq!(get(&r, "/p/pool/a%20b.deb/", &[]).await.status(), 404);
    // Host-routed projects list from `/` (host names in any case, with a port).
    let by_host = client()
        .get(format!("http://{}/", r.addr))
        .header("host", "Get.Example.ORG:80")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(by_host.contains("<a href=\"pool/\">pool/</a>"), "{by_host}");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_ipv6_and_geoip_reloads() {
    let mut r = start().await;
    let paris = [("x-forwarded-for", "192.0.2.7")];
    // HTTP/2 over cleartext on the same port.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = h2
        .get(format!("http://{}/p/pool/a%20b.deb", r.addr))
        .header(paris[0].0, paris[0].1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(location(&resp), "https://lyon.example/p/pool/a%20b.deb");

    // The IPv6 listener, with a client behind a trusted IPv6 proxy located over IPv6.
    for _ in 0..5 {
        let v6 = client()
            .get(format!("http://{}/p/pool/a%20b.deb", r.v6_addr))
            .header("x-forwarded-for", "2001:db8:1::5")
            .send()
            .await
            .unwrap();
        assert_eq!(location(&v6), "https://berlin.example/p/pool/a%20b.deb");
    }

    // A new City database (192.0.2.0/24 now in Berlin) is picked up without a restart.
    geoip_with(r.dirs.1.path(), ("DE", 52.52, 13.40));
    let rr = &r;
    wait_for(
        "the new database to be picked up",
        Duration::from_secs(5),
        || async move {
            let now = location(&get(rr, "/p/pool/a%20b.deb", &paris).await);
            if now == "https://berlin.example/p/pool/a%20b.deb" {
                Ok(())
            } else {
                Err(now)
            }
        },
    )
    .await;
    r.stop().await;
}

/// Redis goes away: the redirector keeps answering from its snapshot (and stays ready); Redis
/// comes back (same port, its data on disk): a change made there reaches the redirector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_serving_through_a_store_outage_and_resyncs() {
    use mirrorfleet_store::{RedisConfig, RedisStore, RedisTarget};
    use mirrorfleet_testkit::Redis;
    let mut redis = Redis::start_with("appendonly yes\nappendfsync always");
    let connect = |url: String| async move {
        let mut config = RedisConfig::new(RedisTarget::Url(url));
        config.retry_for = Duration::from_millis(500);
        RedisStore::connect(config).await.unwrap()
    };
    let store = connect(redis.url()).await;
    let mut r = start_with(
        store,
        tempfile::tempdir().unwrap(),
        Duration::from_millis(300),
    )
    .await;
    let paris = [("x-forwarded-for", "192.0.2.7")];
    let lyon = "https://lyon.example/p/pool/a%20b.deb";
    assert_eq!(location(&get(&r, "/p/pool/a%20b.deb", &paris).await), lyon);

    redis.kill();
    // The redirector has seen the store go: a download's stats, read from the store, fail…
    let rr = &r;
    wait_for(
        "?stats to answer 503 with the store gone",
        Duration::from_secs(10),
        || async move {
            match get(rr, "/p/pool/a%20b.deb?stats", &[]).await.status() {
                s if s == 503 => Ok(()),
                s => Err(s.to_string()),
            }
        },
    )
    .await;
    // …and downloads are still answered from its snapshot, and it stays ready.
    for _ in 0..10 {
        assert_eq!(location(&get(&r, "/p/pool/a%20b.deb", &paris).await), lyon);
    }
    assert_eq!(get(&r, "/readyz", &[]).await.status(), 200);

    redis.restart();
    let writer = StateWriter::new(connect(redis.url()).await);
    writer.write_health(&down("lyon")).await.unwrap();
    let rr = &r;
    wait_for(
        "the change made after Redis came back",
        Duration::from_secs(15),
        || async move {
            let now = location(&get(rr, "/p/pool/a%20b.deb", &paris).await);
            if !now.is_empty() && now != lyon {
                Ok(())
            } else {
                Err(now)
            }
        },
    )
    .await;
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_files_download_counts() {
    // Counts are per UTC day: the whole test runs within one.
    mirrorfleet_testkit::clear_of_midnight(Duration::from_secs(90));
    let mut r = start().await;
    let paris = [("x-forwarded-for", "192.0.2.7")];
    for _ in 0..3 {
        assert_eq!(get(&r, "/p/pool/a%20b.deb", &paris).await.status(), 302);
    }
    // Counted in memory, flushed every 100 ms here, then read from the store.
    let rr = &r;
    let summary = wait_for(
        "the three downloads to be counted",
        Duration::from_secs(5),
        || async move {
            let resp = get(rr, "/p/pool/a%20b.deb?stats", &[]).await;
            assert_eq!(resp.status(), 200);
            assert_eq!(
                resp.headers()["content-type"],
                "application/json; charset=utf-8"
            );
            let v: serde_json::Value =
                serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
            if v["today"] == 3 {
                Ok(v)
            } else {
                Err(v.to_string())
            }
        },
    )
    .await;
    assert_eq!(summary["path"], "pool/a b.deb");
    assert_eq!(summary["month"], 3);
    assert_eq!(summary["last30Days"], 3);
    let today = chrono_day();
    let day: serde_json::Value = serde_json::from_slice(
        &get(&r, &format!("/p/pool/a%20b.deb?stats={today}"), &[])
            .await
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(day["downloads"], 3);
    assert_eq!(day["days"][&today], 3);
    assert_eq!(
        get(&r, "/p/pool/a%20b.deb?stats=last-week", &[])
            .await
            .status(),
        400
    );
    assert_eq!(get(&r, "/p/pool/none.deb?stats", &[]).await.status(), 404);
    assert!(requests_counted(&r, "file_stats").await >= 2);
    r.stop().await;
}

/// A request written as raw bytes, so that no client normalizes its path on the way (the
/// `url` crate would resolve `%2e%2e` and turn `\` into `/`): the status and `Location`.
async fn raw_get(addr: SocketAddr, target: &str, host: &str) -> (u16, Option<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let answer = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    };
    let answer = within("the raw request's answer", Duration::from_secs(10), answer).await;
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    let location = answer.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("location")
            .then(|| value.trim().to_owned())
    });
    (status, location)
}

/// The index lags the origin by up to a scan: a file it does not know yet goes to the
/// project's fallback at the same path, counted apart from the ordinary fallbacks; every
/// other answer about it says so; nothing but the path is ever taken into the redirect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_the_index_does_not_know_yet_go_to_the_fallback() {
    // Counts are per UTC day: the whole test runs within one.
    mirrorfleet_testkit::clear_of_midnight(Duration::from_secs(90));
    let mut r = start().await;
    let paris = [("x-forwarded-for", "192.0.2.7")];
    let origin = "https://origin.example/p/pool/new%20file%C3%BC%3F.deb";

    // GET and HEAD: the same redirect as a fallback's, at the same path, encoded the same way.
    let resp = get(&r, "/p/pool/new%20file%C3%BC%3F.deb", &paris).await;
    assert_eq!(
        (resp.status().as_u16(), location(&resp)),
        (302, origin.to_owned())
    );
    assert_eq!(resp.headers()["cache-control"], "private, no-cache");
    assert!(
        resp.headers().get("digest").is_none() && resp.headers().get("link").is_none(),
        "no hash nor metalink is known: {:?}",
        resp.headers()
    );
    let head = client()
        .head(format!("http://{}/p/pool/new%20file%C3%BC%3F.deb", r.addr))
        .header(paris[0].0, paris[0].1)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (head.status().as_u16(), location(&head)),
        (302, origin.to_owned())
    );
    // Host routing; the query, the Host header and empty segments add nothing to the target.
    let by_host = client()
        .get(format!(
            "http://{}/pool/new.deb?u=https://evil.example/",
            r.addr
        ))
        .header("host", "get.example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (by_host.status().as_u16(), location(&by_host)),
        (302, "https://origin.example/p/pool/new.deb".to_owned())
    );
    assert_eq!(
        raw_get(r.addr, "/p//evil.example/x", "evil.example").await,
        (
            302,
            Some("https://origin.example/p/evil.example/x".to_owned())
        )
    );
    let downloads = 3; // GETs of files not in the index so far (HEAD is not a download)

    // Hostile paths are refused as before, under a prefix or a host: never a redirect.
    let long = format!("/p/{}", "a".repeat(5000));
    for (target, host, status) in [
        ("/p/pool/..%2f..%2fetc/passwd", "localhost", 400),
        ("/p/%2e%2e/%2e%2e/etc/passwd", "localhost", 400),
        ("/p/pool/%2E%2E%2Fx", "localhost", 400),
        ("/p/pool/x%00y", "localhost", 400),
        ("/p/pool/%zz", "localhost", 400),
        (&long, "localhost", 414),
        ("/p/pool/..;/..;/etc/passwd", "localhost", 404),
        ("/p/pool/..%5c..%5cetc%5cpasswd", "localhost", 404),
        ("/p/pool/%252e%252e/%252e%252e/etc/passwd", "localhost", 404),
        ("/p/pool/.../x", "localhost", 404),
        ("/p/pool/..\\..\\etc\\passwd", "localhost", 404),
        ("/..;/etc/passwd", "get.example.org", 404),
        ("/%2e%2e/etc/passwd", "get.example.org", 400),
    ] {
        assert_eq!(
            raw_get(r.addr, target, host).await,
            (status, None),
            "{target} at {host}"
        );
    }

    // The other answers say it is not indexed yet and name the fallback.
    let json: serde_json::Value = serde_json::from_slice(
        &get(&r, "/p/pool/new.deb?json", &paris)
            .await
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(json["indexed"], false, "{json:#}");
    assert_eq!(json["file"], serde_json::Value::Null);
    assert_eq!(json["fallback"], "https://origin.example/p/pool/new.deb");
    assert!(
        json["note"]
            .as_str()
            .unwrap()
            .contains("not in the index yet"),
        "{json:#}"
    );
    let indexed: serde_json::Value = serde_json::from_slice(
        &get(&r, "/p/pool/a%20b.deb?json", &paris)
            .await
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(indexed["indexed"], true);
    assert_eq!(indexed["note"], serde_json::Value::Null);
    let page = get(&r, "/p/pool/new.deb?mirrorlist", &paris).await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(
        page.contains("not in the index yet")
            && page.contains("<a href=\"https://origin.example/p/pool/new.deb\">"),
        "{page}"
    );
    let meta4 = get(&r, "/p/pool/new.deb?metalink", &paris).await;
    assert_eq!(meta4.status(), 200);
    assert_eq!(
        meta4.headers()["content-disposition"],
        "attachment; filename=\"new.deb.meta4\""
    );
    let meta4 = meta4.text().await.unwrap();
    assert!(meta4.contains("<file name=\"new.deb\">"), "{meta4}");
    assert!(
        !meta4.contains("<size>") && !meta4.contains("<hash"),
        "{meta4}"
    );
    let urls: Vec<&str> = meta4.lines().filter(|l| l.contains("<url")).collect();
    assert_eq!(
        urls,
        ["    <url priority=\"1\">https://origin.example/p/pool/new.deb</url>"],
        "{meta4}"
    );
    assert_eq!(get(&r, "/p/pool/new.deb?sha256", &[]).await.status(), 404);
    assert_eq!(get(&r, "/p/pool/new.deb?stats", &[]).await.status(), 404);
    // A directory the index does not have: the origin's listing, or a JSON 404 naming it.
    let dir = get(&r, "/p/pool/new%20dir/", &[]).await;
    assert_eq!(
        (dir.status().as_u16(), location(&dir)),
        (302, "https://origin.example/p/pool/new%20dir/".to_owned())
    );
    let dir = get(&r, "/p/pool/new%20dir/?json", &[]).await;
    assert_eq!(dir.status(), 404);
    let dir: serde_json::Value = serde_json::from_slice(&dir.bytes().await.unwrap()).unwrap();
    assert_eq!(dir["indexed"], false);
    assert_eq!(dir["fallback"], "https://origin.example/p/pool/new%20dir/");
    let redirects = downloads + 1 + 1; // and the HEAD, and the directory

    // An ordinary fallback (indexed, no mirror holds it) is counted apart.
    let fallback = get(&r, "/p/pool/only-origin.deb", &paris).await;
    assert_eq!(fallback.status(), 302);
    assert_eq!(requests_counted(&r, "fallback_unindexed").await, redirects);
    assert_eq!(requests_counted(&r, "fallback").await, 1);

    // The fleet-wide counts (read back from the store) show them apart too.
    let rr = &r;
    let today = wait_for(
        "today's counts to show both kinds of fallback downloads",
        Duration::from_secs(10),
        || async move {
            let resp = get(rr, "/?mirrorstats&json", &[]).await;
            let page: serde_json::Value =
                serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
            let today = &page["today"];
            if today["unindexedRedirects"] == downloads && today["fallbackRedirects"] == 1 {
                Ok(today.clone())
            } else {
                Err(format!("{page:#}"))
            }
        },
    )
    .await;
    assert_eq!(today["redirects"], downloads + 1, "{today:#}");

    // A project without a fallback answers 404 for what its index does not have.
    let mut fleet = test_fleet();
    fleet.projects[0].fallbacks.clear();
    StateWriter::new(r.store.clone())
        .write_fleet(&fleet)
        .await
        .unwrap();
    let rr = &r;
    wait_for(
        "the fleet without a fallback",
        Duration::from_secs(5),
        || async move {
            match get(rr, "/p/pool/new.deb", &paris).await {
                resp if resp.status() == 404 => Ok(()),
                resp => Err(format!("{} {}", resp.status(), location(&resp))),
            }
        },
    )
    .await;
    let head = client()
        .head(format!("http://{}/p/pool/new.deb", r.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404);
    assert_eq!(get(&r, "/p/pool/new.deb?json", &[]).await.status(), 404);
    assert_eq!(get(&r, "/p/pool/new.deb.meta4", &[]).await.status(), 404);
    assert_eq!(get(&r, "/p/new/", &[]).await.status(), 404);
    assert_eq!(
        location(&get(&r, "/p/pool/a%20b.deb", &paris).await),
        "https://lyon.example/p/pool/a%20b.deb",
        "indexed files are not touched"
    );

    // The counts flushed on shutdown: apart from the ordinary fallback, no bytes.
    r.stop().await;
    let day = chrono_day();
    let per_mirror = r
        .store
        .read_stats(&stats::day_key(&day, "mirror"))
        .await
        .unwrap();
    assert_eq!(
        per_mirror.get("fallback-unindexed").copied(),
        Some(downloads),
        "{per_mirror:?}"
    );
    assert_eq!(
        per_mirror.get("fallback").copied(),
        Some(1),
        "{per_mirror:?}"
    );
    let bytes = r
        .store
        .read_stats(&stats::day_key(&day, "bytes"))
        .await
        .unwrap();
    assert_eq!(bytes.get("fallback-unindexed"), None, "{bytes:?}");
}
