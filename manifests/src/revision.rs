//! Manifests as they were at a Git revision (for `mirrorfleet validate --probe --base REF`,
//! which probes only the Mirrors a pull request adds or changes): the same paths, read from
//! the commit's tree instead of the disk, with the same rules as [`crate::files`] (which files,
//! limits, binary files). Nothing is checked out and the working copy is not touched.

use std::path::{Path, PathBuf};

use git2::{ObjectType, Repository, Tree};
use mirrorfleet_validate::Problem;

use crate::files::{MAX_FILE_BYTES, MAX_FILES, is_manifest_name};
use crate::{Error, Manifests, Result};

/// Reads the manifests under `paths` (as named on the command line, files or directories of
/// the working copy of one repository) as they were at `rev` (a commit, branch, tag or
/// `origin/main`). A path that did not exist at `rev` contributes nothing; names are the
/// paths as given, so that they match a read of the working copy.
pub fn read_at(paths: &[PathBuf], rev: &str) -> Result<Manifests> {
    let first = paths.first().ok_or_else(|| Error::NoManifests {
        paths: String::new(),
    })?;
    let repo = Repository::discover(first).map_err(|source| Error::NotInRepository {
        path: first.clone(),
        source,
    })?;
    let workdir = repo
        .workdir()
        .ok_or_else(|| Error::NotInRepository {
            path: first.clone(),
            source: git2::Error::from_str("the repository is bare"),
        })?
        .canonicalize()
        .map_err(|source| Error::Read {
            path: first.clone(),
            source,
        })?;
    let tree = repo
        .revparse_single(rev)
        .and_then(|o| o.peel_to_tree())
        .map_err(|source| Error::NoRevision {
            rev: rev.to_owned(),
            repo: workdir.clone(),
            source,
        })?;
    let mut manifests = Manifests::default();
    let mut count = 0;
    for path in paths {
        let absolute = path.canonicalize().map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        let relative = absolute
            .strip_prefix(&workdir)
            .map_err(|_| Error::NotInRepository {
                path: path.clone(),
                source: git2::Error::from_str(&format!(
                    "it is outside the repository at {}",
                    workdir.display()
                )),
            })?;
        let git_err = |source| Error::Git {
            what: "read the tree",
            url: workdir.display().to_string(),
            source,
        };
        let entry = if relative.as_os_str().is_empty() {
            None
        } else {
            match tree.get_path(relative) {
                Ok(e) => Some(e),
                // New in the working copy: nothing at the base.
                Err(e) if e.code() == git2::ErrorCode::NotFound => continue,
                Err(e) => return Err(git_err(e)),
            }
        };
        match entry.as_ref().and_then(|e| e.kind()) {
            None | Some(ObjectType::Tree) => {
                let sub = match &entry {
                    None => tree.clone(),
                    Some(e) => repo.find_tree(e.id()).map_err(&git_err)?,
                };
                walk(&repo, &sub, path, 0, &mut manifests, &mut count)?;
            }
            Some(ObjectType::Blob) => {
                if let Some(e) = &entry {
                    let blob = repo.find_blob(e.id()).map_err(git_err)?;
                    push(&mut manifests, path, blob.content());
                }
            }
            Some(_) => {}
        }
    }
    Ok(manifests)
}

fn walk(
    repo: &Repository,
    tree: &Tree<'_>,
    dir: &Path,
    depth: usize,
    manifests: &mut Manifests,
    count: &mut usize,
) -> Result<()> {
    if depth > crate::files::MAX_DEPTH {
        // Reported, as on disk, never skipped silently.
        manifests.problems.push(crate::files::too_deep_problem(dir));
        return Ok(());
    }
    // Sorted by name, as the walk of the disk is (a tree's entries are sorted already, but by
    // bytes with directories as if they ended in `/`).
    let mut entries: Vec<_> = tree.iter().collect();
    entries.sort_by(|a, b| a.name_bytes().cmp(b.name_bytes()));
    for entry in entries {
        let Ok(name) = entry.name() else { continue };
        if name.starts_with('.') {
            continue;
        }
        let path = dir.join(name);
        match entry.kind() {
            Some(ObjectType::Tree) => {
                if let Ok(sub) = repo.find_tree(entry.id()) {
                    walk(repo, &sub, &path, depth + 1, manifests, count)?;
                }
            }
            Some(ObjectType::Blob) if is_manifest_name(name) => {
                *count += 1;
                if *count > MAX_FILES {
                    return Err(Error::TooManyFiles {
                        path: dir.to_path_buf(),
                        limit: MAX_FILES,
                    });
                }
                if let Ok(blob) = repo.find_blob(entry.id()) {
                    push(manifests, &path, blob.content());
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Adds a file's text, or the reason it is not a manifest.
fn push(manifests: &mut Manifests, path: &Path, bytes: &[u8]) {
    let name = path.display().to_string();
    let text = if bytes.len() as u64 > MAX_FILE_BYTES {
        Err(format!(
            "is over {} MiB at the base revision",
            MAX_FILE_BYTES / (1024 * 1024)
        ))
    } else if bytes.contains(&0) {
        Err("is a binary file at the base revision".to_owned())
    } else {
        String::from_utf8(bytes.to_vec())
            .map_err(|_| "is not UTF-8 text at the base revision".to_owned())
    };
    match text {
        Ok(text) => manifests.files.push((name, text)),
        Err(message) => manifests.problems.push(Problem {
            file: name,
            line: 0,
            kind: None,
            name: None,
            path: String::new(),
            message,
        }),
    }
}
