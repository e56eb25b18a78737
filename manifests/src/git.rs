//! Following a Git repository of manifests with git2: clone once, then fetch and
//! fast-forward on every poll. A branch whose history was rewritten is reset to the remote
//! (the repository is the source of truth; a warning says so). Credentials: an SSH key or a
//! token read from a file, never from the command line. Blocking (git2 is synchronous): run
//! it in `spawn_blocking`.

use std::path::{Path, PathBuf};

use git2::{
    AutotagOption, Cred, CredentialType, FetchOptions, Oid, RemoteCallbacks, Repository,
    build::CheckoutBuilder, build::RepoBuilder,
};

use crate::Error;

/// A repository to follow.
#[derive(Debug, Clone)]
pub struct GitSource {
    /// Clone URL (https://, ssh://, git@host:path, or a local path).
    pub url: String,
    /// Branch to follow.
    pub branch: String,
    /// Directory of the manifests inside the repository ("" for the root).
    pub path: String,
    /// Where the working copy lives.
    pub checkout: PathBuf,
    /// SSH private key file.
    pub ssh_key: Option<PathBuf>,
    /// File holding an HTTPS token.
    pub token_file: Option<PathBuf>,
}

/// The result of a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    /// The commit checked out.
    pub commit: String,
    /// The manifests directory in the working copy.
    pub dir: PathBuf,
    /// Whether the commit changed with this poll.
    pub changed: bool,
}

impl GitSource {
    fn err(&self, what: &'static str) -> impl Fn(git2::Error) -> Error + '_ {
        move |source| Error::Git {
            what,
            url: self.url.clone(),
            source,
        }
    }

    fn fetch_options(&self) -> Result<FetchOptions<'static>, Error> {
        let token = match &self.token_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|source| Error::Credential {
                        path: p.clone(),
                        source,
                    })?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        let key = self.ssh_key.clone();
        let mut callbacks = RemoteCallbacks::new();
        let mut tries = 0;
        callbacks.credentials(move |_url, username, allowed| {
            // libgit2 asks again after a rejected credential: give up rather than loop.
            tries += 1;
            if tries > 3 {
                return Err(git2::Error::from_str("credentials rejected"));
            }
            if allowed.contains(CredentialType::SSH_KEY)
                && let Some(key) = &key
            {
                return Cred::ssh_key(username.unwrap_or("git"), None, key, None);
            }
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
                && let Some(token) = &token
            {
                return Cred::userpass_plaintext(username.unwrap_or("x-access-token"), token);
            }
            Err(git2::Error::from_str(
                "the repository asks for credentials: pass an SSH key or a token file",
            ))
        });
        let mut options = FetchOptions::new();
        options.remote_callbacks(callbacks);
        options.download_tags(AutotagOption::None);
        Ok(options)
    }

    /// Clones or fetches, then checks out the branch's head.
    pub fn sync(&self) -> Result<Synced, Error> {
        let cloned = !self.checkout.join(".git").exists();
        let repo = if !cloned {
            Repository::open(&self.checkout).map_err(self.err("open"))?
        } else {
            if self.checkout.exists() {
                // A half-made clone from an interrupted run: start again.
                let _ = std::fs::remove_dir_all(&self.checkout);
            }
            RepoBuilder::new()
                .branch(&self.branch)
                .fetch_options(self.fetch_options()?)
                .clone(&self.url, &self.checkout)
                .map_err(self.err("clone"))?
        };
        let before = repo.head().ok().and_then(|h| h.target());
        let mut remote = repo
            .find_remote("origin")
            .or_else(|_| repo.remote_anonymous(&self.url))
            .map_err(self.err("remote"))?;
        let refspec = format!("+refs/heads/{b}:refs/remotes/origin/{b}", b = self.branch);
        remote
            .fetch(&[&refspec], Some(&mut self.fetch_options()?), None)
            .map_err(self.err("fetch"))?;
        let target: Oid = repo
            .find_reference(&format!("refs/remotes/origin/{}", self.branch))
            .ok()
            .and_then(|r| r.target())
            .ok_or_else(|| Error::NoBranch {
                url: self.url.clone(),
                branch: self.branch.clone(),
            })?;
        if before != Some(target) {
            let fast_forward =
                before.is_none_or(|b| repo.graph_descendant_of(target, b).unwrap_or(false));
            if !fast_forward {
                tracing::warn!(url = %self.url, branch = %self.branch, "the branch was rewritten; resetting to the remote");
            }
            let local = format!("refs/heads/{}", self.branch);
            repo.reference(&local, target, true, "mirrorfleet: follow the remote")
                .map_err(self.err("update the branch"))?;
            repo.set_head(&local).map_err(self.err("set HEAD"))?;
            repo.checkout_head(Some(CheckoutBuilder::new().force().remove_untracked(true)))
                .map_err(self.err("checkout"))?;
        }
        let commit = target.to_string();
        let dir = self.checkout.join(self.path.trim_matches('/'));
        if !dir.is_dir() {
            return Err(Error::NoPath {
                url: self.url.clone(),
                path: self.path.clone(),
                commit,
            });
        }
        Ok(Synced {
            changed: cloned || before != Some(target),
            commit,
            dir,
        })
    }
}

/// A working-copy directory under `state_dir` for `url` (stable across restarts).
pub fn checkout_dir(state_dir: &Path, url: &str) -> PathBuf {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in url.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    state_dir.join("git").join(format!("{h:016x}"))
}
