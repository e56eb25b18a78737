//! [`StoreArgs`] (feature `clap`): the flags that name a store, written once for every binary
//! (`mirrorfleet` and `mirrorfleet-redirector`), so they read and fail the same way.

use std::path::PathBuf;

use crate::{AnyStore, Error, Result};

/// Where the fleet state is: a Redis URL, sentinels with a master name, or an embedded store
/// directory.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StoreArgs {
    /// Redis URL, e.g. redis://redis.mirrorfleet.svc:6379/0.
    #[arg(long, env = "MIRRORFLEET_REDIS", conflicts_with_all = ["sentinel", "state_dir"])]
    pub redis: Option<String>,
    /// Sentinel URLs (repeat the flag, or separate with commas); use with --sentinel-master.
    #[arg(
        long,
        env = "MIRRORFLEET_SENTINELS",
        value_delimiter = ',',
        requires = "sentinel_master"
    )]
    pub sentinel: Vec<String>,
    /// The master's name in the sentinels' configuration.
    #[arg(long, env = "MIRRORFLEET_SENTINEL_MASTER")]
    pub sentinel_master: Option<String>,
    /// Directory of the embedded store (instead of Redis).
    #[arg(long, env = "MIRRORFLEET_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Redis password (with sentinels: the master's), when the URL carries none. Give it in
    /// the environment (e.g. from a Secret), not on the command line; scan Jobs get it from
    /// a Secret too, never in their arguments.
    #[arg(long, env = "MIRRORFLEET_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<crate::Password>,
}

impl StoreArgs {
    /// Opens the store the flags name; [`Error::NoStore`] when they name none.
    pub async fn open(&self) -> Result<AnyStore> {
        crate::open_store_with_password(
            self.redis.as_deref(),
            &self.sentinel,
            self.sentinel_master.as_deref(),
            self.state_dir.as_deref(),
            self.redis_password.as_ref(),
        )
        .await?
        .ok_or(Error::NoStore)
    }

    /// The same flags for a child process (a scan Job): Redis or Sentinel only, as a Job
    /// cannot share an embedded store's directory; never the password (a Job's arguments
    /// are readable by whoever may read Jobs).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(url) = &self.redis {
            args.push(format!("--redis={url}"));
        }
        for s in &self.sentinel {
            args.push(format!("--sentinel={s}"));
        }
        if let Some(m) = &self.sentinel_master {
            args.push(format!("--sentinel-master={m}"));
        }
        args
    }
}
