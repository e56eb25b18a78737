//! Git repositories made by tests (feature `git`): a repository with `main` checked out, and
//! commits of whole files on top of it or as a rewritten history.

use std::path::Path;

use git2::{Repository, RepositoryInitOptions, Signature};

/// A repository with `main` checked out.
pub fn origin(dir: &Path) -> Repository {
    let mut opts = RepositoryInitOptions::new();
    opts.initial_head("main");
    Repository::init_opts(dir, &opts).unwrap()
}

/// Writes `files` and commits them all (on top of `parent`, or as a new root).
pub fn commit(repo: &Repository, files: &[(&str, &str)], root: bool) -> String {
    let workdir = repo.workdir().unwrap().to_owned();
    for (path, text) in files {
        let p = workdir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = Signature::now("t", "t@example.invalid").unwrap();
    let parent = if root {
        None
    } else {
        repo.head().ok().and_then(|h| h.peel_to_commit().ok())
    };
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    let oid = if root {
        // A rewritten history: a new root commit the branch is forced to.
        let oid = repo
            .commit(None, &sig, &sig, "rewrite", &tree, &[])
            .unwrap();
        repo.reference("refs/heads/main", oid, true, "rewrite")
            .unwrap();
        oid
    } else {
        repo.commit(Some("HEAD"), &sig, &sig, "change", &tree, &parents)
            .unwrap()
    };
    oid.to_string()
}
