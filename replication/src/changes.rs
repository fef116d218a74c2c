//! What changed in a watched source since the last snapshot, as a file watcher reported it:
//! the paths named by its events, so a snapshot looks at those instead of every file.
//! Anything the watcher could not account for — a lost event, a path outside the source or
//! not UTF-8, more paths than are worth tracking — makes the next snapshot read everything.

use std::collections::BTreeSet;
use std::path::Path;

/// Paths tracked at most; beyond, the next snapshot reads everything.
pub const MAX_CHANGED_PATHS: usize = 4096;

/// Changed paths under a source, relative to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    paths: BTreeSet<String>,
    everything: bool,
}

impl Default for Changes {
    /// Nothing is known yet: everything is read.
    fn default() -> Self {
        Self::everything()
    }
}

impl Changes {
    /// Nothing changed (as far as a watcher running from now on can tell).
    pub fn none() -> Self {
        Self {
            paths: BTreeSet::new(),
            everything: false,
        }
    }

    /// Unknown changes: read everything.
    pub fn everything() -> Self {
        Self {
            paths: BTreeSet::new(),
            everything: true,
        }
    }

    /// Notes that `path` (under `source`) changed.
    pub fn note(&mut self, source: &Path, path: &Path) {
        if self.everything {
            return;
        }
        let relative = path
            .strip_prefix(source)
            .ok()
            .and_then(|r| r.to_str())
            .map(|r| r.trim_end_matches('/'));
        match relative {
            Some(r) if !r.is_empty() && self.paths.len() < MAX_CHANGED_PATHS => {
                self.paths.insert(r.to_owned());
            }
            _ => self.note_everything(),
        }
    }

    /// Notes changes that cannot be named.
    pub fn note_everything(&mut self) {
        self.everything = true;
        self.paths.clear();
    }

    /// The changed paths, or `None` if everything must be read.
    pub fn paths(&self) -> Option<&BTreeSet<String>> {
        (!self.everything).then_some(&self.paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_the_source_are_kept_relative_and_anything_else_means_everything() {
        let source = Path::new("/srv/data");
        let mut changes = Changes::none();
        changes.note(source, Path::new("/srv/data/a/b"));
        changes.note(source, Path::new("/srv/data/c"));
        let paths: Vec<&str> = changes
            .paths()
            .unwrap()
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(paths, ["a/b", "c"]);

        let mut outside = changes.clone();
        outside.note(source, Path::new("/srv/other"));
        assert_eq!(outside.paths(), None);
        let mut itself = changes.clone();
        itself.note(source, source);
        assert_eq!(itself.paths(), None, "the source itself: moved or replaced");
        assert_eq!(Changes::default().paths(), None, "unknown until watched");

        let mut many = Changes::none();
        for i in 0..=MAX_CHANGED_PATHS {
            many.note(source, &source.join(i.to_string()));
        }
        assert_eq!(many.paths(), None);
    }
}
