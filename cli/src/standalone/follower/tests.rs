//! The follower on a real directory and a real Git repository, writing to an embedded store.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mirrorfleet_crds::state::{FLEET_KEY, FleetState};
use mirrorfleet_manifests::GitSource;
use mirrorfleet_testkit::git::{commit, origin};
use mirrorfleet_testkit::{wait_for, within};
use tokio::sync::watch;

use super::{ManifestSource, Reading, follow, read_once};
use crate::standalone::Task;
use crate::standalone::testing::{self, TIMEOUT};

const EVERY: Duration = Duration::from_millis(50);

/// One project whose first fallback is `fallback`; `broken` adds a mirror of a sponsor that
/// does not exist.
fn manifests(fallback: &str, broken: bool) -> String {
    let mut text = testing::project(
        "demo",
        "local: /srv/demo",
        &format!("  fallbacks:\n    - url: {fallback}\n"),
    );
    if broken {
        text.push_str("---\napiVersion: mirrorfleet.io/v1alpha1\nkind: Mirror\nmetadata:\n  name: orphan\nspec:\n  sponsorRef: nobody\n  projects:\n    - project: demo\n      https: https://orphan.example/demo/\n");
    }
    text
}

fn fallback_of(fleet: &FleetState) -> String {
    fleet.projects[0].fallbacks[0].url.clone()
}

/// Waits for a reading that started after now: two more than were reported so far.
async fn a_reading_after_now(reading: &watch::Receiver<Reading>) -> Reading {
    let wanted = reading.borrow().reads + 2;
    wait_for(
        "a reading of the manifests as they are now",
        TIMEOUT,
        || {
            let r = reading.borrow().clone();
            std::future::ready(if r.reads >= wanted {
                Ok(r)
            } else {
                Err(format!("{r:?}"))
            })
        },
    )
    .await
}

/// Starts the follower on `source` (its first reading good), as `maintain` does.
async fn started(
    source: ManifestSource,
    t: &testing::TestStore,
) -> (
    Task<()>,
    watch::Receiver<Arc<FleetState>>,
    watch::Receiver<Reading>,
) {
    let first = read_once(&source).await;
    let fleet = first.fleet.unwrap();
    t.writer.write_fleet(&fleet).await.unwrap();
    let (fleet_tx, fleet_rx) = watch::channel(Arc::new(fleet));
    let (reading_tx, reading_rx) = watch::channel(Reading {
        reads: 1,
        commit: first.commit,
        problems: None,
    });
    let task = Task::spawn(follow(
        source,
        EVERY,
        t.writer.clone(),
        fleet_tx,
        reading_tx,
    ));
    (task, fleet_rx, reading_rx)
}

fn in_dir(dir: &Path) -> ManifestSource {
    ManifestSource {
        dir: dir.to_path_buf(),
        git: None,
        locator: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_is_followed_and_only_a_changed_good_fleet_is_applied() {
    let t = testing::store().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.yaml");
    testing::write_atomically(&file, manifests("https://a.example/demo/", false));
    let (task, mut fleet, reading) = started(in_dir(dir.path()), &t).await;
    let written = t.generation(FLEET_KEY).await;

    // An edit that compiles to the same fleet: read, but neither stored nor published.
    let same = format!(
        "# a comment\n{}",
        manifests("https://a.example/demo/", false)
    );
    testing::write_atomically(&file, same);
    let r = a_reading_after_now(&reading).await;
    assert_eq!(r.problems, None);
    assert!(
        !fleet.has_changed().unwrap(),
        "an unchanged fleet was published"
    );
    assert_eq!(
        t.generation(FLEET_KEY).await,
        written,
        "an unchanged fleet was stored"
    );

    // A change with problems: reported, and the last good fleet stays.
    testing::write_atomically(&file, manifests("https://b.example/demo/", true));
    let reported = wait_for("the problems to be reported", TIMEOUT, || {
        let r = reading.borrow().clone();
        std::future::ready(r.problems.clone().ok_or(format!("{r:?}")))
    })
    .await;
    assert!(
        reported.contains("Sponsor/nobody does not exist"),
        "{reported}"
    );
    assert!(
        !fleet.has_changed().unwrap(),
        "a broken fleet was published"
    );
    let stored = t.read().await.fleet.unwrap();
    assert_eq!(fallback_of(&stored), "https://a.example/demo/");

    // Fixed: stored, then published.
    testing::write_atomically(&file, manifests("https://b.example/demo/", false));
    within("the new fleet to be published", TIMEOUT, fleet.changed())
        .await
        .unwrap();
    assert_eq!(fallback_of(&fleet.borrow()), "https://b.example/demo/");
    let stored = t.read().await.fleet.unwrap();
    assert_eq!(*stored, **fleet.borrow(), "published before it was stored");

    // Nobody receives the fleet any more: the follower returns.
    drop(fleet);
    within("the follower to return", TIMEOUT, task)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_repository_is_followed_and_a_broken_commit_is_reported_with_its_id() {
    let t = testing::store().await;
    let remote = tempfile::tempdir().unwrap();
    let repo = origin(remote.path());
    let path = "fleet/fleet.yaml";
    commit(
        &repo,
        &[(path, &manifests("https://a.example/demo/", false))],
        false,
    );
    let work = tempfile::tempdir().unwrap();
    let source = ManifestSource {
        dir: PathBuf::new(),
        git: Some(GitSource {
            url: remote.path().display().to_string(),
            branch: "main".into(),
            path: "fleet".into(),
            checkout: work.path().join("checkout"),
            ssh_key: None,
            token_file: None,
        }),
        locator: None,
    };
    let (_task, mut fleet, reading) = started(source, &t).await;

    let bad = commit(
        &repo,
        &[(path, &manifests("https://b.example/demo/", true))],
        false,
    );
    let reported = wait_for("the broken commit to be reported", TIMEOUT, || {
        let r = reading.borrow().clone();
        std::future::ready(match &r.problems {
            Some(p) if r.commit.as_deref() == Some(bad.as_str()) => Ok(p.clone()),
            _ => Err(format!("{r:?}")),
        })
    })
    .await;
    assert!(
        reported.contains("Sponsor/nobody does not exist"),
        "{reported}"
    );
    assert!(
        !fleet.has_changed().unwrap(),
        "a broken commit was published"
    );
    assert_eq!(
        fallback_of(&t.read().await.fleet.unwrap()),
        "https://a.example/demo/"
    );

    let fixed = commit(
        &repo,
        &[(path, &manifests("https://b.example/demo/", false))],
        false,
    );
    within("the fixed commit to be published", TIMEOUT, fleet.changed())
        .await
        .unwrap();
    assert_eq!(fallback_of(&fleet.borrow()), "https://b.example/demo/");
    // Reported right after it was published.
    wait_for("the fixed commit's reading", TIMEOUT, || {
        let r = reading.borrow().clone();
        std::future::ready(
            if r.commit.as_deref() == Some(fixed.as_str()) && r.problems.is_none() {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            },
        )
    })
    .await;
}
