//! The container image built by scripts/image, run from its own root filesystem: unpacked
//! with umoci (as a container runtime would), its config checked (user, entrypoint, labels),
//! then its binaries run inside that root (chroot, as the image's numeric user, with the
//! image's environment — no file of this machine is visible to them): `--version` of both,
//! `validate`, a source scan and an rsync scan of a mirror (with the image's own rsync), and
//! the redirector on that state answering `/readyz`, a redirect and `/metrics`.
//!
//! Ignored by plain `cargo test`: it needs the image (`MIRRORFLEET_IMAGE=oci:DIR:TAG`, the
//! last line scripts/image prints) and root for chroot; scripts/test builds the image and
//! runs it.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use mirrorfleet_testkit::*;

/// The image's user.
const UID: u32 = 65532;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `oci:DIR:TAG` from the environment, as (DIR, TAG).
fn image() -> (String, String) {
    let reference = std::env::var("MIRRORFLEET_IMAGE").unwrap_or_else(|_| {
        panic!(
            "set MIRRORFLEET_IMAGE=oci:DIR:TAG (the last line of scripts/image); scripts/test does"
        )
    });
    let rest = reference
        .strip_prefix("oci:")
        .unwrap_or_else(|| panic!("MIRRORFLEET_IMAGE={reference}: expected oci:DIR:TAG"));
    let (dir, tag) = rest
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("MIRRORFLEET_IMAGE={reference}: expected oci:DIR:TAG"));
    (dir.to_owned(), tag.to_owned())
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// A command run inside `rootfs` as the image's user, with only the image's environment.
fn inside(rootfs: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(find("chroot"));
    cmd.arg(format!("--userspec={UID}:{UID}"))
        .arg(rootfs)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin")
        .current_dir("/");
    cmd
}

/// `GET path` on 127.0.0.1:`port` over a plain connection: (status, head, body).
fn get(port: u16, path: &str) -> Result<(u16, String, String), String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: get.example\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    let (head, body) = answer.split_once("\r\n\r\n").ok_or("no header end")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((status, head.to_owned(), body.to_owned()))
}

#[test]
#[ignore = "needs the image (scripts/image) and root: scripts/test runs it"]
fn the_image_runs_both_binaries_from_its_own_root_filesystem() {
    let (layout, tag) = image();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(tag, version, "the image's tag is the crate version");

    // The image's config: labels, user, entrypoint.
    let config = run(Command::new(find("skopeo"))
        .args(["inspect", "--config"])
        .arg(format!("oci:{layout}:{tag}")));
    let config: serde_json::Value = serde_json::from_slice(&config.stdout).unwrap();
    let labels = &config["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], version);
    assert_eq!(labels["org.opencontainers.image.title"], "mirrorfleet");
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert_eq!(config["config"]["User"], format!("{UID}:{UID}"));
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/bin/mirrorfleet"])
    );

    // Unpacked as a runtime would: one layer, FROM scratch.
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    run(Command::new(find("umoci"))
        .args(["unpack", "--image"])
        .arg(format!("{layout}:{tag}"))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["process"]["user"]["uid"], UID);
    assert_eq!(
        spec["process"]["args"],
        serde_json::json!(["/usr/bin/mirrorfleet", "--help"])
    );
    let mut top: Vec<String> = std::fs::read_dir(&rootfs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["etc", "lib", "lib64", "tmp", "usr"], "nothing else");
    let certs = std::fs::read_to_string(rootfs.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    assert!(
        certs.matches("BEGIN CERTIFICATE").count() > 100,
        "the CA bundle"
    );
    let tmp = std::fs::metadata(rootfs.join("tmp")).unwrap();
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
    // What a container runtime adds: /dev/null (child processes' stdin).
    std::fs::create_dir(rootfs.join("dev")).unwrap();
    run(Command::new(find("mknod"))
        .args(["-m", "666"])
        .arg(rootfs.join("dev/null"))
        .args(["c", "1", "3"]));

    // Both binaries, as the image's user.
    let out = run(&mut inside(&rootfs, &["/usr/bin/mirrorfleet", "--version"]));
    assert_eq!(text(&out.stdout), format!("mirrorfleet {version}\n"));
    let out = run(&mut inside(
        &rootfs,
        &["/usr/bin/mirrorfleet-redirector", "--version"],
    ));
    assert_eq!(
        text(&out.stdout),
        format!("mirrorfleet-redirector {version}\n")
    );

    // A demo fleet inside the root: a local source, one mirror on an rsync daemon of this
    // machine (loopback is shared with the chroot).
    let demo = rootfs.join("tmp/demo");
    let t = 1_795_309_320;
    let files: &[(&str, &[u8], i64)] = &[
        ("releases/demo-3.0.iso", b"an iso image", t),
        ("TIME", b"1795309320\n", t),
    ];
    write_tree(&demo.join("source"), files);
    let mirror = world_readable_tempdir();
    write_tree(mirror.path(), files);
    let rsyncd = rsync_daemon(&[("complete", mirror.path())]);
    std::fs::create_dir_all(demo.join("fleet")).unwrap();
    std::fs::write(
        demo.join("fleet/demo.yaml"),
        format!(
            "apiVersion: mirrorfleet.io/v1alpha1\nkind: Project\nmetadata:\n  name: demo\nspec:\n  routing:\n    pathPrefix: /demo/\n  source:\n    local: /tmp/demo/source\n  fallbacks:\n    - url: http://127.0.0.1:9/origin/\n  traceFile: TIME\n---\n\
             apiVersion: mirrorfleet.io/v1alpha1\nkind: Sponsor\nmetadata:\n  name: loopback\nspec:\n  displayName: Loopback\n---\n\
             apiVersion: mirrorfleet.io/v1alpha1\nkind: Mirror\nmetadata:\n  name: complete\nspec:\n  sponsorRef: loopback\n  projects:\n    - project: demo\n      http: http://127.0.0.1:9/complete/\n      rsync: rsync://127.0.0.1:{}/complete/\n",
            rsyncd.port
        ),
    )
    .unwrap();
    let state = demo.join("state");
    std::fs::create_dir_all(&state).unwrap();
    chown(&state, Some(UID), Some(UID)).unwrap();
    let store = [
        "--manifests",
        "/tmp/demo/fleet",
        "--state-dir",
        "/tmp/demo/state",
    ];

    let out = run(&mut inside(
        &rootfs,
        &["/usr/bin/mirrorfleet", "validate", "/tmp/demo/fleet"],
    ));
    assert!(
        text(&out.stderr).starts_with("no problems in 3 documents"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&mut inside(
        &rootfs,
        &[
            &[
                "/usr/bin/mirrorfleet",
                "scan",
                "source",
                "--project",
                "demo",
            ][..],
            &store,
            &["--no-progress"],
        ]
        .concat(),
    ));
    assert!(
        text(&out.stdout).starts_with("project demo: 2 files, 23 bytes, serial "),
        "{}",
        text(&out.stdout)
    );
    // The rsync listing runs the image's rsync (the chroot has no other).
    let out = run(&mut inside(
        &rootfs,
        &[
            &[
                "/usr/bin/mirrorfleet",
                "scan",
                "mirror",
                "--mirror",
                "complete",
            ][..],
            &store,
        ]
        .concat(),
    ));
    assert_eq!(
        text(&out.stdout),
        "mirror complete, project demo (rsync): 2 files, 23 bytes, 0 missing, 0 mismatched\n"
    );

    // The redirector on that state.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let child = inside(
        &rootfs,
        &[
            "/usr/bin/mirrorfleet-redirector",
            "--state-dir",
            "/tmp/demo/state",
            "--listen",
            &listen,
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let pid = child.id();
    let mut redirector = KillOnDrop(child);
    wait_for_blocking(
        "/readyz to answer 200",
        Duration::from_secs(10),
        || match get(port, "/readyz") {
            Ok((200, _, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let (status, head, _) = get(port, "/demo/releases/demo-3.0.iso").unwrap();
    assert_eq!(status, 302, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\nlocation: http://127.0.0.1:9/complete/releases/demo-3.0.iso\r\n"),
        "redirected to the scanned mirror: {head}"
    );
    let (status, _, metrics) = get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("mirrorfleet_"), "{metrics}");
    // SIGTERM: a clean shutdown (drain, stats flushed), exit 0.
    run(Command::new(find("kill")).args(["-TERM", &pid.to_string()]));
    let status = wait_for_blocking("the redirector to exit", Duration::from_secs(15), || {
        redirector
            .0
            .try_wait()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "still running".to_owned())
    });
    let mut log = String::new();
    if let Some(mut e) = redirector.0.stderr.take() {
        let _ = e.read_to_string(&mut log);
    }
    assert!(status.success(), "{status}: {log}");
}
