//! Reading manifest files from disk (for `mirrorfleet validate`, standalone mode and a Git
//! working copy): walks directories, applies size and count limits, rejects binary files, and
//! hands the texts to the pure validator in `mirrorfleet_validate`.

use std::fs;
use std::path::{Path, PathBuf};

use mirrorfleet_validate::{self as validate, Options, Outcome, Problem, SourceFile};

use crate::{Error, Result};

/// Largest manifest file read; larger ones are reported, not read.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Most files visited under the paths of one run.
pub const MAX_FILES: usize = 100_000;
/// Deepest directory nesting followed.
pub(crate) const MAX_DEPTH: usize = 32;

/// Manifest texts read from disk, and the files that could not be used.
#[derive(Debug, Default)]
pub struct Manifests {
    /// (display name, text) of each file, in a stable order.
    pub files: Vec<(String, String)>,
    /// Files that were found but are not usable (binary, too big, unreadable).
    pub problems: Vec<Problem>,
}

impl Manifests {
    /// Validates the files as one fleet; file-level problems come first.
    pub fn validate(&self, options: Options) -> Outcome {
        let sources: Vec<SourceFile<'_>> = self
            .files
            .iter()
            .map(|(name, text)| SourceFile { name, text })
            .collect();
        let mut outcome = validate::validate(&sources, options);
        let mut problems = self.problems.clone();
        problems.append(&mut outcome.problems);
        outcome.problems = problems;
        outcome
    }
}

/// Reads every manifest under `paths`: named files whatever their extension, and `*.yaml` /
/// `*.yml` files below named directories (hidden entries, `kustomization.yaml` and symlinked
/// directories skipped).
pub fn read(paths: &[PathBuf]) -> Result<Manifests> {
    let mut found = Vec::new();
    let mut too_deep = Vec::new();
    for path in paths {
        let meta = fs::metadata(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound { path: path.clone() },
            _ => Error::Read {
                path: path.clone(),
                source,
            },
        })?;
        if meta.is_dir() {
            walk(path, path, 0, &mut found, &mut too_deep)?;
        } else {
            found.push(path.clone());
        }
    }
    if found.is_empty() {
        let paths = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Error::NoManifests { paths });
    }
    let mut manifests = Manifests::default();
    for dir in too_deep {
        manifests.problems.push(too_deep_problem(&dir));
    }
    for path in found {
        let name = path.display().to_string();
        match read_text(&path) {
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
    Ok(manifests)
}

/// The problem of a directory nested past [`MAX_DEPTH`], whose manifests are not read.
pub(crate) fn too_deep_problem(dir: &Path) -> Problem {
    Problem {
        file: dir.display().to_string(),
        line: 0,
        kind: None,
        name: None,
        path: String::new(),
        message: format!(
            "nested deeper than {MAX_DEPTH} directories: not read (move its manifests up)"
        ),
    }
}

/// Collects the manifests under `dir` into `found`; directories past [`MAX_DEPTH`] go to
/// `too_deep`, to be reported (never skipped silently).
fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    found: &mut Vec<PathBuf>,
    too_deep: &mut Vec<PathBuf>,
) -> Result<()> {
    if depth > MAX_DEPTH {
        too_deep.push(dir.to_path_buf());
        return Ok(());
    }
    let read_err = |source| Error::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<fs::DirEntry> = fs::read_dir(dir)
        .map_err(read_err)?
        .collect::<Result<_, _>>()
        .map_err(read_err)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let file_type = entry.file_type().map_err(|source| Error::Read {
            path: entry.path(),
            source,
        })?;
        let path = entry.path();
        if file_type.is_dir() {
            walk(root, &path, depth + 1, found, too_deep)?;
        } else if is_manifest_name(&name)
            && (file_type.is_file() || (file_type.is_symlink() && path.is_file()))
        {
            found.push(path);
            if found.len() > MAX_FILES {
                return Err(Error::TooManyFiles {
                    path: root.to_path_buf(),
                    limit: MAX_FILES,
                });
            }
        }
    }
    Ok(())
}

pub(crate) fn is_manifest_name(name: &str) -> bool {
    (name.ends_with(".yaml") || name.ends_with(".yml")) && !name.starts_with("kustomization.")
}

/// Reads a file as UTF-8 text, or says why it is not a manifest.
fn read_text(path: &Path) -> std::result::Result<String, String> {
    let meta = fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "is {} MiB; manifests over {} MiB are not read (is this really a manifest?)",
            meta.len() / (1024 * 1024),
            MAX_FILE_BYTES / (1024 * 1024)
        ));
    }
    let bytes = fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.contains(&0) {
        return Err("is a binary file (it contains NUL bytes), not a YAML manifest".into());
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}
