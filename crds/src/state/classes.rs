//! Path classes of a project: which files are mutable metadata (rewritten in place, served
//! only by mirrors proven to hold the current version) and which are immutable (any mirror
//! with the right size will do). Globs use `/` as separator; `*` stays within one segment,
//! `**` crosses segments. A file in neither class is immutable; `immutable` wins over `mutable`.

use globset::{GlobSet, GlobSetBuilder};

use super::ProjectState;

/// Compiled path classes.
#[derive(Debug, Clone)]
pub struct PathClasses {
    mutable: GlobSet,
    immutable: GlobSet,
}

impl Default for PathClasses {
    fn default() -> PathClasses {
        PathClasses {
            mutable: GlobSet::empty(),
            immutable: GlobSet::empty(),
        }
    }
}

impl PathClasses {
    /// Compiles the globs; a glob that does not compile is named in the error.
    pub fn new(mutable: &[String], immutable: &[String]) -> Result<PathClasses, String> {
        fn build(globs: &[String]) -> Result<GlobSet, String> {
            let mut b = GlobSetBuilder::new();
            for g in globs {
                let glob = globset::GlobBuilder::new(g)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| format!("path class glob {g:?}: {e}"))?;
                b.add(glob);
            }
            b.build().map_err(|e| e.to_string())
        }
        Ok(PathClasses {
            mutable: build(mutable)?,
            immutable: build(immutable)?,
        })
    }

    /// The classes of a compiled project.
    pub fn of(project: &ProjectState) -> Result<PathClasses, String> {
        PathClasses::new(&project.mutable, &project.immutable)
    }

    /// Whether `path` (relative to the project root) is mutable metadata.
    pub fn is_mutable(&self, path: &str) -> bool {
        self.mutable.is_match(path) && !self.immutable.is_match(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutable_metadata_and_immutable_overrides() {
        let c = PathClasses::new(
            &[
                "dists/*/InRelease".into(),
                "**/repodata/*".into(),
                "dists/**/Packages*".into(),
            ],
            &["**/*.iso".into(), "dists/*/by-hash/**".into()],
        )
        .unwrap();
        assert!(c.is_mutable("dists/stable/InRelease"));
        assert!(
            !c.is_mutable("dists/stable/main/InRelease"),
            "* stays within a segment"
        );
        assert!(c.is_mutable("dists/stable/main/binary-amd64/Packages.xz"));
        assert!(c.is_mutable("41/Everything/x86_64/os/repodata/repomd.xml"));
        assert!(!c.is_mutable("pool/main/a/apt/apt.deb"));
        assert!(!c.is_mutable("repodata/x.iso"), "immutable wins");
        assert!(
            PathClasses::new(&["[".into()], &[])
                .unwrap_err()
                .contains("\"[\"")
        );
    }
}
