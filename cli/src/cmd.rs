//! The shared plumbing of CLI commands: the Git flags, loading the fleet from manifests or
//! from the store, and the `scan` commands.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use mirrorfleet_crds::state::{FileIndex, FleetState};
use mirrorfleet_manifests::{self as manifests, GitSource};
use mirrorfleet_scan::{self as scan, run};
use mirrorfleet_store::{AnyStore, StateReader, StateWriter};
use mirrorfleet_validate::compile;

/// A Git repository of manifests to follow.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GitArgs {
    /// Follow this Git repository (clone, then fetch and fast-forward every --git-interval
    /// seconds).
    #[arg(long)]
    pub git: Option<String>,
    /// Branch to follow.
    #[arg(long, default_value = "main")]
    pub git_branch: String,
    /// Seconds between two fetches.
    #[arg(long, default_value_t = 30)]
    pub git_interval: u64,
    /// SSH private key for the repository.
    #[arg(long)]
    pub git_ssh_key: Option<PathBuf>,
    /// File holding an HTTPS token for the repository.
    #[arg(long)]
    pub git_token_file: Option<PathBuf>,
}

impl GitArgs {
    /// The source, with its working copy under `state_dir` and manifests at `path` in it.
    pub fn source(&self, state_dir: &std::path::Path, path: &str) -> Option<GitSource> {
        let url = self.git.clone()?;
        Some(GitSource {
            checkout: manifests::checkout_dir(state_dir, &url),
            url,
            branch: self.git_branch.clone(),
            path: path.to_owned(),
            ssh_key: self.git_ssh_key.clone(),
            token_file: self.git_token_file.clone(),
        })
    }
}

/// The fleet from manifests (validated, compiled), or from the store.
pub async fn load_fleet(
    manifests_dir: Option<&PathBuf>,
    store: &AnyStore,
) -> anyhow::Result<FleetState> {
    if let Some(dir) = manifests_dir {
        let outcome = manifests::read(std::slice::from_ref(dir))?.validate(Default::default());
        if let Some(first) = outcome.problems.first() {
            anyhow::bail!(
                "{} has {} problem(s), the first: {first}; run `mirrorfleet validate {}`",
                dir.display(),
                outcome.problems.len(),
                dir.display()
            );
        }
        return Ok(compile::compile(&outcome.fleet));
    }
    let (state, _) = StateReader::new(store.clone()).load().await?;
    state
        .fleet
        .map(|f| f.as_ref().clone())
        .ok_or_else(|| anyhow::anyhow!("the store holds no fleet yet; pass --manifests DIR"))
}

/// Unix seconds now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `mirrorfleet scan source --project P`.
pub async fn scan_source(
    project: &str,
    manifests_dir: Option<&PathBuf>,
    store: AnyStore,
    progress: bool,
) -> anyhow::Result<FileIndex> {
    let fleet = load_fleet(manifests_dir, &store).await?;
    let p = fleet
        .project(project)
        .ok_or_else(|| anyhow::anyhow!("no project named {project}"))?;
    let (state, _) = StateReader::new(store.clone()).load().await?;
    let previous = state.indexes.get(project).map(|i| i.as_ref().clone());
    let index = run::scan_source(p, previous.as_ref(), &scan::Limits::default(), progress).await?;
    let writer = StateWriter::new(store);
    if manifests_dir.is_some() {
        writer.write_fleet(&fleet).await?;
    }
    writer.write_index(&index, now()).await?;
    Ok(index)
}

/// `mirrorfleet scan mirror --mirror M [--project P]`: returns one line per project scanned.
pub async fn scan_mirror(
    mirror: &str,
    project: Option<&str>,
    manifests_dir: Option<&PathBuf>,
    store: AnyStore,
) -> anyhow::Result<Vec<Result<run::MirrorScan, scan::ScanError>>> {
    let fleet = load_fleet(manifests_dir, &store).await?;
    let m = fleet
        .mirror(mirror)
        .ok_or_else(|| anyhow::anyhow!("no mirror named {mirror}"))?;
    let (state, _) = StateReader::new(store.clone()).load().await?;
    let writer = StateWriter::new(store);
    let mut results = Vec::new();
    for carried in &m.projects {
        if project.is_some_and(|p| p != carried.project) {
            continue;
        }
        let p = fleet.project(&carried.project).ok_or_else(|| {
            anyhow::anyhow!(
                "mirror {mirror} carries unknown project {}",
                carried.project
            )
        })?;
        let Some(index) = state.indexes.get(&p.name) else {
            anyhow::bail!(
                "project {} has no index yet: run `mirrorfleet scan source --project {}` first",
                p.name,
                p.name
            );
        };
        results.push(run::scan_mirror(&writer, m, p, index, &run::limits_for(m), now()).await);
    }
    if results.is_empty() {
        anyhow::bail!(
            "mirror {mirror} does not carry project {}",
            project.unwrap_or("(any)")
        );
    }
    Ok(results)
}

/// Where new serials are announced (webhooks are the Projects' own).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PushArgs {
    /// MQTT broker on which each new source serial is published (topic
    /// `rsync/<origin host>/<project>` or the Project's `spec.push.topic`, QoS 1):
    /// `mqtt://[user@]host[:port]` or `mqtts://…`.
    #[arg(long, env = "MIRRORFLEET_MQTT")]
    pub mqtt: Option<String>,
    /// File whose first line is the broker password (rather than in the URL).
    #[arg(long, env = "MIRRORFLEET_MQTT_PASSWORD_FILE")]
    pub mqtt_password_file: Option<PathBuf>,
    /// PEM file of the CA certificates to trust for `mqtts://` instead of the system's.
    #[arg(long)]
    pub mqtt_ca: Option<PathBuf>,
    /// The origin host in the topics of projects with a local source
    /// (`rsync/<hub>/<project>`); the machine's hostname by default.
    #[arg(long)]
    pub push_hub: Option<String>,
}

impl PushArgs {
    /// The push settings these flags give (webhooks only without `--mqtt`).
    pub fn settings(&self) -> anyhow::Result<mirrorfleet_push::Settings> {
        let host = mirrorfleet_push::hostname();
        let broker = match &self.mqtt {
            None => None,
            Some(url) => {
                let id = format!("mirrorfleet-{host}-{}", std::process::id());
                let mut b = mirrorfleet_push::Broker::parse(url, &id)?;
                if let Some(f) = &self.mqtt_password_file {
                    b = b.with_password_file(f)?;
                }
                if let Some(f) = &self.mqtt_ca {
                    b = b.with_ca_file(f)?;
                }
                Some(b)
            }
        };
        Ok(mirrorfleet_push::Settings::new(
            broker,
            self.push_hub.clone().unwrap_or(host),
        ))
    }
}

/// `mirrorfleet publish` against standalone: `POST <url>/-/publish/<project>` with the token
/// of `token_file`; the listener's answer, or an error saying what it refused and why.
pub async fn publish_standalone(
    project: &str,
    url: &str,
    token_file: &std::path::Path,
) -> anyhow::Result<String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let token = crate::standalone::admin::read_token(token_file)?;
    let endpoint = format!(
        "{}{}{project}",
        url.trim_end_matches('/'),
        crate::standalone::admin::PUBLISH
    );
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| anyhow::anyhow!("cannot set up an HTTP client: {e}"))?;
    let resp = client
        .post(&endpoint)
        .bearer_auth(&*token)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the admin listener at {endpoint}: {e}"))?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("{endpoint} refused the publish ({status}): {}", body.trim());
    }
    Ok(body)
}

/// `mirrorfleet publish --kubernetes`: sets the Project's `scan-requested` annotation, which
/// the operator answers by indexing the source at once (and then removes).
pub async fn publish_kubernetes(project: &str, namespace: &str) -> anyhow::Result<()> {
    use kube::api::{Api, Patch, PatchParams};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default().await.map_err(|e| {
        anyhow::anyhow!("cannot find the Kubernetes API (in-cluster or kubeconfig): {e}")
    })?;
    let api: Api<mirrorfleet_crds::v1alpha1::Project> = Api::namespaced(client, namespace);
    let patch = serde_json::json!({
        "metadata": {"annotations": {mirrorfleet_operator::jobs::SCAN_REQUESTED: now().to_string()}}
    });
    api.patch(project, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| anyhow::anyhow!("cannot annotate Project {namespace}/{project}: {e}"))?;
    Ok(())
}
