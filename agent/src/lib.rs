//! `mirrorfleet-agent` (also `mirrorfleet agent`): the lean program on a mirror's node. It
//! learns its duties from the fleet (the redirector's public `/-/mirrors/<name>.json`, or a
//! file of it), subscribes to its projects' MQTT topics, and on each push — and on a fallback
//! timer with jitter — syncs each project with a paced `rsync` ([`plan`] decides the command
//! lines, [`rsync`] runs them), one run per project at a time; then it writes the trace file
//! and publishes its sync report on `mirrorfleet/report/<mirror>`.
//!
//! It must not depend on kube, k8s-openapi or git2 (`scripts/test` checks): a micro mirror's
//! node is a small box.

mod fleet;
mod mqtt;
pub mod plan;
pub mod rsync;
mod sync;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mirrorfleet_push::Broker;
use tokio::sync::mpsc;

pub use fleet::Source;

/// What can stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client cannot be built.
    #[error("cannot build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// The redirector did not answer with the duties.
    #[error("cannot fetch the mirror's duties from {url}")]
    Fetch {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The duties are not the JSON expected.
    #[error("the duties from {from} are not a mirror's duties (JSON)")]
    Duties {
        from: String,
        #[source]
        source: serde_json::Error,
    },
    /// The duties are another mirror's.
    #[error("the duties from {from} are mirror {named:?}'s, not {mirror:?}'s")]
    OtherMirror {
        from: String,
        named: String,
        mirror: String,
    },
    /// The broker setting is bad.
    #[error(transparent)]
    Broker(#[from] mirrorfleet_push::Error),
    /// A setting is out of range.
    #[error("--{flag} {value}: {why}")]
    Setting {
        flag: &'static str,
        value: String,
        why: &'static str,
    },
}

/// The agent's settings (the flags of `mirrorfleet-agent` and `mirrorfleet agent`).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The Mirror resource this node is.
    #[arg(long, value_name = "NAME")]
    pub mirror: String,
    /// The redirector whose `/-/mirrors/<NAME>.json` describes the node's duties, e.g.
    /// `https://dl.example.org`.
    #[arg(
        long,
        value_name = "URL",
        required_unless_present = "duties",
        conflicts_with = "duties"
    )]
    pub fleet: Option<String>,
    /// A file holding that JSON instead.
    #[arg(long, value_name = "FILE")]
    pub duties: Option<PathBuf>,
    /// The node's mirror root: project P goes into ROOT/P/.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// The MQTT broker (`mqtt[s]://[user@]host[:port]`) the hub announces serials on and
    /// sync reports go to. Without it, only the fallback timer syncs.
    #[arg(long, value_name = "URL", env = "MIRRORFLEET_MQTT")]
    pub mqtt: Option<String>,
    /// The broker password (the node's token), first line of FILE.
    #[arg(long, value_name = "FILE", env = "MIRRORFLEET_MQTT_PASSWORD_FILE")]
    pub mqtt_password_file: Option<PathBuf>,
    /// A PEM file of CA certificates for an `mqtts://` broker.
    #[arg(long, value_name = "FILE")]
    pub mqtt_ca: Option<PathBuf>,
    /// Sync reports go to PREFIX/<mirror>.
    #[arg(long, value_name = "PREFIX", default_value = "mirrorfleet/report")]
    pub report_prefix: String,
    /// Seconds between fallback syncs of each project (± the jitter).
    #[arg(long, value_name = "SECONDS", default_value_t = 21_600)]
    pub fallback_seconds: u64,
    /// The fallback timer's jitter, a fraction of its period (0–0.5).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.1)]
    pub fallback_jitter: f64,
    /// Seconds without I/O before rsync gives up (its --timeout and --contimeout).
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub io_timeout_seconds: u64,
    /// Seconds one run (all its stages) may take before rsync is killed.
    #[arg(long, value_name = "SECONDS", default_value_t = 21_600)]
    pub deadline_seconds: u64,
    /// The pace in Mbit/s instead of the fleet's (20 % of the Mirror's bandwidthMbps, else
    /// 200).
    #[arg(long, value_name = "MBPS")]
    pub pace_mbps: Option<u64>,
    /// The rsync program.
    #[arg(long, value_name = "PROGRAM", default_value = "rsync")]
    pub rsync: PathBuf,
}

/// Runs the agent until `shutdown` resolves (then running rsyncs are killed). A redirector that
/// does not answer with the duties at start is asked again with backoff (1 s doubling to 60 s).
pub async fn run(args: Args, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    if !(0.0..=0.5).contains(&args.fallback_jitter) {
        return Err(Error::Setting {
            flag: "fallback-jitter",
            value: args.fallback_jitter.to_string(),
            why: "give a fraction from 0 to 0.5",
        });
    }
    for (flag, v) in [
        ("fallback-seconds", args.fallback_seconds),
        ("io-timeout-seconds", args.io_timeout_seconds),
        ("deadline-seconds", args.deadline_seconds),
    ] {
        if v == 0 {
            return Err(Error::Setting {
                flag,
                value: v.to_string(),
                why: "give at least 1",
            });
        }
    }
    let broker = match &args.mqtt {
        Some(url) => {
            let mut b = Broker::parse(url, &format!("mirrorfleet-agent-{}", args.mirror))?;
            if let Some(f) = &args.mqtt_password_file {
                b = b.with_password_file(f)?;
            }
            if let Some(ca) = &args.mqtt_ca {
                b.ca = Some(std::fs::read(ca).map_err(|source| Error::Read {
                    path: ca.clone(),
                    source,
                })?);
            }
            Some(b)
        }
        None => None,
    };
    // reqwest is built without a default rustls provider; the node's is ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let source = match (&args.fleet, &args.duties) {
        (Some(url), _) => Source::redirector(url)?,
        (None, Some(path)) => Source::File(path.clone()),
        (None, None) => {
            return Err(Error::Setting {
                flag: "fleet",
                value: String::new(),
                why: "give --fleet URL or --duties FILE",
            });
        }
    };
    let mut shutdown = std::pin::pin!(shutdown);
    // A redirector not answering yet (the node booted first, or the fleet is not loaded) is
    // waited for; a file that cannot be read is a setting to fix.
    let mut wait = Duration::from_secs(1);
    let duties = loop {
        match source.load(&args.mirror).await {
            Ok(d) => break d,
            Err(e) if matches!(source, Source::File(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %mirrorfleet_runtime::error_chain(&e), retry_in = ?wait, "cannot read the duties yet; retrying");
                tokio::select! {
                    () = &mut shutdown => return Ok(()),
                    () = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(60));
            }
        }
    };
    let pace = args.pace_mbps.unwrap_or(duties.pace_mbps);
    tracing::info!(mirror = %args.mirror, projects = duties.projects.len(), pace_mbps = pace, "duties read");
    let node = Arc::new(sync::Node {
        mirror: args.mirror.clone(),
        root: args.root.clone(),
        rsync: args.rsync.clone(),
        pacing: plan::Pacing {
            bwlimit_kib: plan::bwlimit_kib(pace),
            io_timeout: Duration::from_secs(args.io_timeout_seconds),
        },
        deadline: Duration::from_secs(args.deadline_seconds),
        fallback: (
            Duration::from_secs(args.fallback_seconds),
            args.fallback_jitter,
        ),
        source,
    });
    let (reports_tx, mut reports_rx) = mpsc::channel(64);
    let mut tasks = tokio::task::JoinSet::new();
    let mut topics = Vec::new();
    for duty in duties.projects {
        let trigger = Arc::new(sync::Trigger::default());
        match &duty.topic {
            Some(t) => topics.push((t.clone(), trigger.clone())),
            None => {
                tracing::warn!(project = %duty.project, "no MQTT topic known for the project; only the fallback timer syncs it")
            }
        }
        tasks.spawn(sync::worker(
            node.clone(),
            duty,
            trigger,
            reports_tx.clone(),
        ));
    }
    drop(reports_tx);
    let report_topic = format!(
        "{}/{}",
        args.report_prefix.trim_end_matches('/'),
        args.mirror
    );
    match broker {
        Some(b) => {
            tasks.spawn(mqtt::run(b, topics, report_topic, reports_rx));
        }
        None => {
            tasks.spawn(async move {
                while let Some(r) = reports_rx.recv().await {
                    tracing::info!(report = %serde_json::to_string(&r).unwrap_or_default(), "no broker: report not published");
                }
            });
        }
    }
    shutdown.await;
    tracing::info!("shutting down; running syncs are stopped");
    tasks.shutdown().await;
    Ok(())
}
