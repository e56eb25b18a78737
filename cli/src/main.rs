//! `mirrorfleet`: the fleet's admin CLI. Parses arguments, runs one command, prints errors
//! once with their causes, and owns the exit codes: 0 success, 1 problems found, 2 could not
//! run.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use mirrorfleet_geo::{Geo, Locator};
use mirrorfleet_manifests as manifests;
use mirrorfleet_store::StoreArgs;
use mirrorfleet_validate::Options;

mod cmd;
mod probe;
mod standalone;

use cmd::{GitArgs, PushArgs};

#[derive(Debug, Parser)]
#[command(
    name = "mirrorfleet",
    version,
    about = "Download redirector and mirror-fleet manager"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check manifests (files or directories of multi-document YAML) as one fleet: schema,
    /// CEL rules, references between resources and contradictions. Exit status 0 when all is
    /// well, 1 when problems were found, 2 when the check could not run.
    Validate {
        /// Files or directories to check.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Ignore documents that are not mirrorfleet resources instead of reporting them.
        #[arg(long)]
        skip_foreign: bool,
        /// Also reach each Mirror over the URLs it declares (DNS per declared address
        /// family, TLS, a HEAD of each project's canary with the origin's size, rsync and
        /// FTP listings of the root) and report per mirror; a failure exits 1.
        #[arg(long)]
        probe: bool,
        /// With --probe: only the Mirrors new or changed since this Git revision of the
        /// repository holding PATHS (e.g. origin/main), as a pull request's CI wants.
        #[arg(long, requires = "probe", value_name = "REF")]
        base: Option<String>,
        /// With --probe: seconds each check may take. A mirror's checks run at once, so
        /// this bounds the time per mirror.
        #[arg(long, default_value_t = 10, value_name = "SECONDS",
              value_parser = clap::value_parser!(u64).range(1..=300))]
        probe_timeout: u64,
    },
    /// Print the CustomResourceDefinitions as YAML (for `kubectl apply -f -`).
    Crds,
    /// Everything in one process, without Kubernetes or Redis: manifests compiled into an
    /// embedded store, source and mirror scans in-process, and the redirector.
    Standalone {
        /// Directory of manifests (re-read every 10 s); with --git, the directory inside the
        /// repository.
        #[arg(long, required_unless_present = "git")]
        manifests: Option<PathBuf>,
        #[command(flatten)]
        git: GitArgs,
        /// Directory of the embedded store (kept across restarts).
        #[arg(long, default_value = "./mirrorfleet-state")]
        state_dir: PathBuf,
        /// Address to listen on (repeat for several).
        #[arg(long, default_value = "[::]:8080", value_delimiter = ',')]
        listen: Vec<std::net::SocketAddr>,
        /// GeoIP City or Country database (MaxMind format; see `mirrorfleet geoip build`).
        #[arg(long)]
        geoip_city: Option<PathBuf>,
        /// GeoIP ASN database.
        #[arg(long)]
        geoip_asn: Option<PathBuf>,
        /// Proxies (CIDR) whose forwarding headers are believed.
        #[arg(long = "trusted-proxy", value_delimiter = ',')]
        trusted_proxies: Vec<ipnet::IpNet>,
        /// Minutes between mirror scans (when neither the Mirror nor the Project sets it).
        #[arg(long, default_value_t = 60)]
        mirror_scan_minutes: u64,
        #[command(flatten)]
        push: PushArgs,
        /// Address of the admin listener (`POST /-/publish/<project>`, for `mirrorfleet
        /// publish`); needs --admin-token-file.
        #[arg(long, requires = "admin_token_file")]
        admin_listen: Option<std::net::SocketAddr>,
        /// File whose first line is the bearer token the admin listener asks for.
        #[arg(long, requires = "admin_listen")]
        admin_token_file: Option<PathBuf>,
    },
    /// Tell mirrorfleet that a project's archive has new files, for it to index them at once:
    /// standalone's admin listener (--url, --token-file), or in a cluster the Project's
    /// `mirrorfleet.io/scan-requested` annotation (--kubernetes).
    Publish {
        /// The project.
        #[arg(long)]
        project: String,
        /// The standalone admin listener, e.g. http://127.0.0.1:8081.
        #[arg(
            long,
            required_unless_present = "kubernetes",
            conflicts_with = "kubernetes"
        )]
        url: Option<String>,
        /// File whose first line is the admin token.
        #[arg(
            long,
            required_unless_present = "kubernetes",
            conflicts_with = "kubernetes"
        )]
        token_file: Option<PathBuf>,
        /// Annotate the Project in the cluster instead (in-cluster config or kubeconfig).
        #[arg(long)]
        kubernetes: bool,
        /// Namespace of the Project (with --kubernetes).
        #[arg(long, env = "MIRRORFLEET_NAMESPACE", default_value = "mirrorfleet")]
        namespace: String,
    },
    /// The node agent of one mirror (also the lean `mirrorfleet-agent` binary): reads its
    /// duties from the fleet (the redirector's /-/mirrors/NAME.json, or --duties FILE),
    /// syncs each project with a paced rsync on MQTT pushes and a fallback timer, writes its
    /// trace file and publishes its sync report on mirrorfleet/report/NAME.
    Agent(mirrorfleet_agent::Args),
    /// The Kubernetes operator: leader election (Lease), controllers for Project, Mirror,
    /// Sponsor and RegionRule, health checks and scan Jobs. Uses the in-cluster config or
    /// the kubeconfig.
    Operator {
        /// Namespace of the resources, the Lease and the scan Jobs.
        #[arg(long, env = "MIRRORFLEET_NAMESPACE", default_value = "mirrorfleet")]
        namespace: String,
        /// Name of the leader Lease.
        #[arg(long, default_value = "mirrorfleet-operator")]
        lease: String,
        /// This replica's identity in the Lease (the pod name).
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Where `/metrics`, `/healthz` and `/readyz` listen.
        #[arg(long, default_value = "[::]:9090")]
        metrics_addr: std::net::SocketAddr,
        /// Image of the scan Jobs (the operator's own).
        #[arg(
            long,
            env = "MIRRORFLEET_IMAGE",
            default_value = mirrorfleet_operator::jobs::DEFAULT_IMAGE
        )]
        image: String,
        /// Scan Jobs running at once.
        #[arg(long, default_value_t = 4)]
        max_scans: usize,
        /// Minutes between two scans of one mirror's project.
        #[arg(long, default_value_t = 60)]
        scan_interval_minutes: i64,
        /// GeoIP City or Country database, to locate mirrors whose spec does not.
        #[arg(long)]
        geoip_city: Option<PathBuf>,
        /// GeoIP ASN database, for mirrors whose spec lists no AS.
        #[arg(long)]
        geoip_asn: Option<PathBuf>,
        #[command(flatten)]
        git: GitArgs,
        /// Directory of the manifests inside the Git repository.
        #[arg(long, default_value = "")]
        git_path: String,
        /// Where the Git working copy lives.
        #[arg(long, default_value = "/tmp/mirrorfleet")]
        work_dir: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        /// A Secret in the namespace holding the Redis password, for the scan Jobs: they get
        /// it as an environment variable from the Secret, never in their arguments.
        #[arg(long)]
        redis_password_secret: Option<String>,
        /// The key of the password in --redis-password-secret.
        #[arg(long, default_value = "password", requires = "redis_password_secret")]
        redis_password_key: String,
        #[command(flatten)]
        push: PushArgs,
    },
    /// GeoIP databases.
    Geoip {
        #[command(subcommand)]
        what: GeoipCommand,
    },
    /// Scan a project's source or a mirror, and write the result to the store.
    Scan {
        #[command(subcommand)]
        what: ScanCommand,
    },
}

#[derive(Debug, Subcommand)]
enum GeoipCommand {
    /// Build country.mmdb and asn.mmdb from Debian's libloc-database (IPFire, CC BY-SA 4.0):
    /// no MaxMind licence needed. Coordinates are country centroids (approximate).
    Build {
        /// Directory to write country.mmdb and asn.mmdb into.
        #[arg(long)]
        out: PathBuf,
        /// Read this `location dump` output instead of running `location dump`.
        #[arg(long)]
        dump: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ScanCommand {
    /// Build a project's index from its source (local tree or upstream) and store it.
    Source {
        /// The project.
        #[arg(long)]
        project: String,
        /// Read the fleet from these manifests instead of the store.
        #[arg(long)]
        manifests: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
        /// No progress bar, even on a terminal.
        #[arg(long)]
        no_progress: bool,
    },
    /// Scan a mirror (all its projects, or one) and store what it holds.
    Mirror {
        /// The mirror.
        #[arg(long)]
        mirror: String,
        /// Only this project.
        #[arg(long)]
        project: Option<String>,
        /// Read the fleet from these manifests instead of the store.
        #[arg(long)]
        manifests: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// One problem per line: `file:line: Kind/name: field.path: what is wrong`.
    Text,
    /// A JSON object for tools.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    mirrorfleet_runtime::init_logging(false);
    mirrorfleet_runtime::block_on_main("mirrorfleet", run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Scan { what } => scan(what).await,
        Command::Standalone {
            manifests,
            git,
            state_dir,
            listen,
            geoip_city,
            geoip_asn,
            trusted_proxies,
            mirror_scan_minutes,
            push,
            admin_listen,
            admin_token_file,
        } => {
            let admin = match (admin_listen, &admin_token_file) {
                (Some(addr), Some(file)) => {
                    let token = standalone::admin::read_token(file)?;
                    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                        anyhow::anyhow!("cannot listen on {addr} (--admin-listen): {e}")
                    })?;
                    tracing::info!(%addr, "admin listener");
                    Some((listener, token))
                }
                _ => None,
            };
            let store = mirrorfleet_store::EmbeddedStore::open(&state_dir)?;
            let path = manifests
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let interval = git.git_interval.max(1);
            let git = git.source(&state_dir, &path);
            let reload_every =
                std::time::Duration::from_secs(if git.is_some() { interval } else { 10 });
            let locator = locator(&geoip_city, &geoip_asn)?;
            let settings = standalone::Settings {
                manifests: manifests.unwrap_or_default(),
                git,
                locator,
                reload_every,
                source_every: std::time::Duration::from_secs(300),
                mirror_every: std::time::Duration::from_secs(mirror_scan_minutes.max(1) * 60),
                recheck_every: std::time::Duration::from_secs(5),
                push: Some(push.settings()?),
            };
            // Keeps the fleet, indexes, availability and health current until dropped.
            let maintenance = standalone::maintain(settings, store.clone()).await?;
            let _admin = admin.map(|(listener, token)| {
                tokio::spawn(standalone::admin::serve(
                    listener,
                    token,
                    maintenance.publisher.clone(),
                ))
            });
            let geo = Geo::open(geoip_city, geoip_asn)?;
            let mut listeners = Vec::new();
            for addr in &listen {
                listeners.push(
                    tokio::net::TcpListener::bind(addr)
                        .await
                        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?,
                );
                tracing::info!(%addr, "listening");
            }
            let config = mirrorfleet_redirector::server::Config {
                trusted_proxies,
                ..Default::default()
            };
            mirrorfleet_redirector::server::run(
                listeners,
                store,
                geo,
                config,
                mirrorfleet_runtime::shutdown_signal(),
            )
            .await;
            drop(maintenance);
            Ok(ExitCode::SUCCESS)
        }
        Command::Operator {
            namespace,
            lease,
            identity,
            metrics_addr,
            image,
            max_scans,
            scan_interval_minutes,
            geoip_city,
            geoip_asn,
            git,
            git_path,
            work_dir,
            store,
            redis_password_secret,
            redis_password_key,
            push,
        } => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let config = kube::Config::infer().await.map_err(|e| {
                anyhow::anyhow!("cannot find the Kubernetes API (in-cluster or kubeconfig): {e}")
            })?;
            let store_args = store.to_args();
            let settings = mirrorfleet_operator::run::Settings {
                namespace,
                lease,
                identity: identity.unwrap_or_else(|| format!("mirrorfleet-{}", std::process::id())),
                metrics_addr,
                jobs: mirrorfleet_operator::jobs::JobSettings {
                    image,
                    store_args,
                    max_concurrent: max_scans.max(1),
                    redis_password_secret: redis_password_secret.map(|s| (s, redis_password_key)),
                    ..Default::default()
                },
                scan_interval_seconds: scan_interval_minutes.max(1) * 60,
                locator: locator(&geoip_city, &geoip_asn)?,
                git: git
                    .source(&work_dir, &git_path)
                    .map(|s| (s, std::time::Duration::from_secs(git.git_interval.max(1)))),
                push: Some(push.settings()?),
            };
            mirrorfleet_operator::run::run(config, store.open().await?, settings, cmd::now).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Geoip {
            what: GeoipCommand::Build { out, dump },
        } => {
            let text = match dump {
                Some(p) => std::fs::read_to_string(&p)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?,
                None => mirrorfleet_geo::build::dump_from_libloc()?,
            };
            std::fs::create_dir_all(&out)?;
            let built = mirrorfleet_geo::build::build(&text, &out)?;
            println!(
                "wrote {}/country.mmdb ({} networks) and {}/asn.mmdb ({} networks); {} skipped",
                out.display(),
                built.countries,
                out.display(),
                built.asns,
                built.skipped
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate {
            paths,
            format,
            skip_foreign,
            probe,
            base,
            probe_timeout,
        } => {
            let probe = probe.then(|| Probe {
                base,
                timeout: std::time::Duration::from_secs(probe_timeout),
            });
            validate(&paths, format, Options { skip_foreign }, probe).await
        }
        Command::Publish {
            project,
            url,
            token_file,
            kubernetes,
            namespace,
        } => {
            if kubernetes {
                cmd::publish_kubernetes(&project, &namespace).await?;
                println!("asked the operator to index project {project} (namespace {namespace})");
            } else {
                let (Some(url), Some(token_file)) = (url, token_file) else {
                    anyhow::bail!("--url and --token-file are needed without --kubernetes");
                };
                let answer = cmd::publish_standalone(&project, &url, &token_file).await?;
                print!("{answer}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent(args) => {
            mirrorfleet_agent::run(args, mirrorfleet_runtime::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crds => {
            print!("{}", mirrorfleet_crds::v1alpha1::crds_yaml());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Locates mirrors whose spec gives no location, when a GeoIP database is given.
fn locator(
    city: &Option<PathBuf>,
    asn: &Option<PathBuf>,
) -> anyhow::Result<Option<std::sync::Arc<Locator>>> {
    if city.is_none() && asn.is_none() {
        return Ok(None);
    }
    let geo = Geo::open(city.clone(), asn.clone())?;
    Ok(Some(std::sync::Arc::new(Locator::new(geo))))
}

/// `validate --probe`'s settings.
#[derive(Debug)]
struct Probe {
    /// Probe only what changed since this revision.
    base: Option<String>,
    /// Bound of each check.
    timeout: std::time::Duration,
}

async fn validate(
    paths: &[PathBuf],
    format: Format,
    options: Options,
    probe: Option<Probe>,
) -> anyhow::Result<ExitCode> {
    let manifests = manifests::read(paths)?;
    let outcome = manifests.validate(options);
    let reports = match &probe {
        None => None,
        Some(p) => {
            let head = mirrorfleet_validate::compile::compile(&outcome.fleet);
            let base = match &p.base {
                None => None,
                Some(rev) => {
                    let at_base = manifests::revision::read_at(paths, rev)?.validate(options);
                    Some(mirrorfleet_validate::compile::compile(&at_base.fleet))
                }
            };
            let selected = probe::plan::select(base.as_ref(), &head);
            Some(probe::run(&head, &selected, p.timeout).await)
        }
    };
    let probe_failed = reports
        .iter()
        .flatten()
        .any(|r: &probe::MirrorReport| r.failures() > 0);
    let mut stdout = std::io::stdout().lock();
    match format {
        Format::Text => {
            for problem in &outcome.problems {
                writeln!(stdout, "{problem}")?;
            }
            if let Some(reports) = &reports {
                write!(stdout, "{}", probe::report::text(reports))?;
            }
            let n = outcome.problems.len();
            eprintln!(
                "{} in {} document{} of {} file{}",
                match n {
                    0 => "no problems".to_owned(),
                    1 => "1 problem".to_owned(),
                    n => format!("{n} problems"),
                },
                outcome.documents,
                if outcome.documents == 1 { "" } else { "s" },
                manifests.files.len() + manifests.problems.len(),
                if manifests.files.len() + manifests.problems.len() == 1 {
                    ""
                } else {
                    "s"
                },
            );
            if let Some(reports) = &reports {
                eprintln!("{}", probe::report::summary(reports));
            }
        }
        Format::Json => {
            let mut report = serde_json::json!({
                "files": manifests.files.len() + manifests.problems.len(),
                "documents": outcome.documents,
                "problems": outcome.problems,
            });
            if let Some(reports) = &reports {
                report["probes"] = probe::report::json(reports);
            }
            writeln!(stdout, "{}", serde_json::to_string_pretty(&report)?)?;
            if let Some(reports) = &reports {
                eprintln!("{}", probe::report::summary(reports));
            }
        }
    }
    stdout.flush()?;
    Ok(if outcome.problems.is_empty() && !probe_failed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn scan(what: ScanCommand) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    match what {
        ScanCommand::Source {
            project,
            manifests,
            store,
            no_progress,
        } => {
            let progress = !no_progress && std::io::stderr().is_terminal();
            let index =
                cmd::scan_source(&project, manifests.as_ref(), store.open().await?, progress)
                    .await?;
            println!(
                "project {project}: {} files, {} bytes, serial {}",
                index.len(),
                index.total_bytes(),
                index.serial
            );
            Ok(ExitCode::SUCCESS)
        }
        ScanCommand::Mirror {
            mirror,
            project,
            manifests,
            store,
        } => {
            let results = cmd::scan_mirror(
                &mirror,
                project.as_deref(),
                manifests.as_ref(),
                store.open().await?,
            )
            .await?;
            let mut failed = false;
            for r in results {
                match r {
                    Ok(s) => {
                        let c = s.availability.counts;
                        println!(
                            "mirror {mirror}, project {} ({}): {} files, {} bytes, {} missing, {} mismatched",
                            s.availability.project,
                            s.protocol,
                            c.files,
                            c.bytes,
                            c.missing,
                            c.mismatched
                        );
                    }
                    Err(e) => {
                        failed = true;
                        eprintln!("mirrorfleet: {e}");
                    }
                }
            }
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
