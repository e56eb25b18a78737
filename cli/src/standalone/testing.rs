//! What the standalone tasks' tests share: an embedded store in a temporary directory,
//! followed the way `maintain` follows it; fleets compiled from manifest text; a TCP server
//! that accepts connections and never answers (a scan that lasts as long as the test wants,
//! for real); waits on the followed state with a deadline that names what was seen.
//!
//! Test code only: it panics with a clear message when something it needs is missing.

#![allow(clippy::unwrap_used)]

use std::io::{ErrorKind, Read};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mirrorfleet_crds::state::{FileIndex, FleetState, ProjectState};
use mirrorfleet_scan::{self as scan, run};
use mirrorfleet_store::{EmbeddedStore, LoadedState, StateReader, StateWriter, Store};
use tokio::sync::watch;

/// Replaces `path` with `text` the way editors and Git do (a new file renamed over the old),
/// so that a follower reading at any moment sees the old text or the new, never half of it.
pub fn write_atomically(path: &std::path::Path, text: impl AsRef<[u8]>) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The deadline of every wait in these tests.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// An embedded store in a temporary directory, with its state followed.
#[derive(Debug)]
pub struct TestStore {
    _dir: tempfile::TempDir,
    pub store: EmbeddedStore,
    pub writer: StateWriter<EmbeddedStore>,
    pub state: watch::Receiver<Arc<LoadedState>>,
}

/// A fresh store, and a follower of it that has loaded it.
pub async fn store() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let state = mirrorfleet_store::follow(store.clone(), Duration::from_secs(30)).await;
    TestStore {
        _dir: dir,
        writer: StateWriter::new(store.clone()),
        store,
        state,
    }
}

impl TestStore {
    /// Waits until `probe` accepts the followed state; gives its value, or panics naming
    /// `what` and the last thing `probe` saw.
    pub async fn until<T>(
        &self,
        what: &str,
        mut probe: impl FnMut(&LoadedState) -> Result<T, String>,
    ) -> T {
        mirrorfleet_testkit::wait_for(what, TIMEOUT, || {
            let state = self.state.borrow().clone();
            std::future::ready(probe(&state))
        })
        .await
    }

    /// Everything the store holds now, read afresh (not through the follower).
    pub async fn read(&self) -> LoadedState {
        StateReader::new(self.store.clone()).load().await.unwrap().0
    }

    /// The generation of `key` in the store now.
    pub async fn generation(&self, key: &str) -> Option<u64> {
        self.store
            .manifest()
            .await
            .unwrap()
            .entries
            .get(key)
            .copied()
    }

    /// Scans `project`'s (local) source and stores the index, as the indexer would.
    pub async fn index(&self, project: &ProjectState) -> Arc<FileIndex> {
        let index = run::scan_source(project, None, &scan::Limits::default(), false)
            .await
            .unwrap();
        self.writer.write_index(&index, 1).await.unwrap();
        Arc::new(index)
    }
}

/// The sponsor every test mirror names.
pub const SPONSOR: &str = "---\napiVersion: mirrorfleet.io/v1alpha1\nkind: Sponsor\nmetadata:\n  name: s\nspec:\n  displayName: S\n";

/// A Project document: `source` is one line under `source:` (`local: /dir`, `rsync: URL`);
/// `extra` is more of the spec, indented by two spaces. `dists/*/Release` is mutable.
pub fn project(name: &str, source: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: mirrorfleet.io/v1alpha1\nkind: Project\nmetadata:\n  name: {name}\nspec:\n  routing:\n    pathPrefix: /{name}/\n  source:\n    {source}\n  pathClasses:\n    mutable: [\"dists/*/Release\"]\n{extra}"
    )
}

/// A Mirror document carrying each (project, rsync URL) given; its HTTP URL (for downloads
/// and probes) is a closed port.
pub fn mirror(name: &str, carried: &[(&str, &str)]) -> String {
    let mut doc = format!(
        "---\napiVersion: mirrorfleet.io/v1alpha1\nkind: Mirror\nmetadata:\n  name: {name}\nspec:\n  sponsorRef: s\n  addressFamilies: [ipv4]\n  projects:\n"
    );
    for (project, rsync) in carried {
        doc.push_str(&format!(
            "    - project: {project}\n      http: http://127.0.0.1:9/{project}/\n      rsync: {rsync}\n"
        ));
    }
    doc
}

/// The fleet these documents compile to (they must be valid).
pub fn fleet(docs: &[String]) -> FleetState {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fleet.yaml"), docs.concat()).unwrap();
    super::follower::load(dir.path()).unwrap_or_else(|p| panic!("test manifests: {p}"))
}

/// A TCP server on 127.0.0.1 that accepts every connection and does not answer, holding each
/// until released: a scan against it lasts until then (or until the client's timeout). A
/// released connection is closed, or with [`Staller::forwarding`] spliced to a real server,
/// so that the scan then goes on and succeeds.
#[derive(Debug)]
pub struct Staller {
    pub port: u16,
    shared: Arc<Mutex<Stalled>>,
    stop: Arc<AtomicBool>,
    forward_to: Option<u16>,
}

#[derive(Debug, Default)]
struct Stalled {
    held: Vec<TcpStream>,
    accepted: usize,
    most: usize,
}

impl Staller {
    /// Released connections are closed.
    pub fn start() -> Staller {
        Staller::with(None)
    }

    /// Released connections are spliced to 127.0.0.1:`port`.
    pub fn forwarding(port: u16) -> Staller {
        Staller::with(Some(port))
    }

    fn with(forward_to: Option<u16>) -> Staller {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Mutex::new(Stalled::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, halt) = (shared.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let mut s = s.lock().unwrap();
                s.held.push(stream);
                s.accepted += 1;
                s.most = s.most.max(s.held.len());
            }
        });
        Staller {
            port,
            shared,
            stop,
            forward_to,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.lock().unwrap().accepted
    }

    /// The most connections held at once.
    pub fn most_at_once(&self) -> usize {
        self.shared.lock().unwrap().most
    }

    /// Connections held whose client is still there. Reads what they sent: not for a
    /// forwarding staller.
    pub fn open(&self) -> usize {
        self.shared
            .lock()
            .unwrap()
            .held
            .iter()
            .filter(|s| still_open(s))
            .count()
    }

    /// Lets the `n` oldest connections held go: hangs up on them, or splices them through.
    pub fn release(&self, n: usize) {
        let mut s = self.shared.lock().unwrap();
        let n = n.min(s.held.len());
        for client in s.held.drain(..n) {
            if let Some(port) = self.forward_to {
                splice(client, port);
            }
        }
    }
}

impl Drop for Staller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `client` to and from a new connection to 127.0.0.1:`port`, each way until its end.
fn splice(client: TcpStream, port: u16) {
    let server = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
    };
    pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
    pipe(server, client);
}

/// Whether the peer of `s` has not hung up. What it sent (an rsync client's greeting) is read
/// and dropped first: the end of the stream only shows behind it.
fn still_open(mut s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return e.kind() == ErrorKind::WouldBlock,
        }
    }
}

/// A watch channel of `fleet`, as the follower would publish it.
pub fn published(
    fleet: FleetState,
) -> (
    watch::Sender<Arc<FleetState>>,
    watch::Receiver<Arc<FleetState>>,
) {
    watch::channel(Arc::new(fleet))
}
