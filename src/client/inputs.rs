//! The command line's files, directories and glob patterns, expanded to the image files to
//! send, in order.
//!
//! A file named on the command line must have an image extension: naming `notes.txt` is a
//! mistake worth stopping for. Inside a directory or a pattern's matches, files without one
//! are skipped with a note (a photo folder holds sidecar files); hidden files and
//! directories are skipped silently. Directories are walked recursively, entries sorted by
//! name, so a run's order is stable.

use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use super::ClientError;

/// Extensions taken as images, lower case: the formats the server decodes.
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "bmp", "gif", "webp", "pnm", "pbm", "pgm", "ppm",
];

/// How many skipped names a note lists before "…".
const NAMES_IN_NOTE: usize = 3;

/// One image to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// As given, or as found under a directory given.
    pub path: PathBuf,
    /// Bytes, when listed; used to fill requests up to the server's body limit.
    pub size: u64,
}

/// The images to send, and notes about what was skipped.
#[derive(Debug, Default)]
pub struct Expanded {
    /// In command-line order; a directory's files sorted by path.
    pub files: Vec<Input>,
    /// One sentence per directory or pattern that had files skipped.
    pub notes: Vec<String>,
}

/// Expands `args` (files, directories, glob patterns) to the images they name.
pub fn expand(args: &[PathBuf]) -> Result<Expanded, ClientError> {
    let mut out = Expanded::default();
    for arg in args {
        match std::fs::metadata(arg) {
            Ok(meta) if meta.is_dir() => {
                let mut found = Found::default();
                found.walk(arg)?;
                found.finish(arg, &mut out)?;
            }
            Ok(meta) => {
                if !is_image(arg) {
                    return Err(ClientError::NotAnImage { path: arg.clone() });
                }
                out.files.push(Input {
                    path: arg.clone(),
                    size: meta.len(),
                });
            }
            Err(source) => match arg.to_str().filter(|s| is_pattern(s)) {
                Some(pattern) => {
                    let mut found = Found::default();
                    found.glob(pattern)?;
                    found.finish(arg, &mut out)?;
                }
                None => {
                    return Err(ClientError::Unreadable {
                        path: arg.clone(),
                        source,
                    })
                }
            },
        }
    }
    Ok(out)
}

/// Whether `path`'s extension is an image format's.
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_some_and(|n| n.starts_with('.'))
}

/// What one directory or pattern yields.
#[derive(Default)]
struct Found {
    files: Vec<Input>,
    skipped: Vec<PathBuf>,
    /// Whether anything matched at all (a pattern matching nothing is an error of its own).
    matched: bool,
}

impl Found {
    fn walk(&mut self, dir: &Path) -> Result<(), ClientError> {
        self.matched = true;
        let entries = WalkDir::new(dir)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !is_hidden(e.file_name()));
        for entry in entries {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(dir).to_path_buf();
                ClientError::Unreadable {
                    path,
                    source: e.into(),
                }
            })?;
            if entry.file_type().is_dir() {
                continue;
            }
            self.add(entry.into_path())?;
        }
        Ok(())
    }

    fn glob(&mut self, pattern: &str) -> Result<(), ClientError> {
        let matches = glob::glob(pattern).map_err(|source| ClientError::BadPattern {
            pattern: pattern.to_string(),
            source,
        })?;
        for m in matches {
            let path = m.map_err(|e| ClientError::Unreadable {
                path: e.path().to_path_buf(),
                source: e.into(),
            })?;
            if path.is_dir() {
                self.walk(&path)?;
            } else {
                self.matched = true;
                self.add(path)?;
            }
        }
        if !self.matched {
            return Err(ClientError::NoMatch {
                pattern: pattern.to_string(),
            });
        }
        Ok(())
    }

    fn add(&mut self, path: PathBuf) -> Result<(), ClientError> {
        if !is_image(&path) {
            self.skipped.push(path);
            return Ok(());
        }
        let size = std::fs::metadata(&path)
            .map_err(|source| ClientError::Unreadable {
                path: path.clone(),
                source,
            })?
            .len();
        self.files.push(Input { path, size });
        Ok(())
    }

    /// Moves the images into `out`, with a note if anything was skipped; `arg` without any
    /// image is an error.
    fn finish(self, arg: &Path, out: &mut Expanded) -> Result<(), ClientError> {
        if self.files.is_empty() {
            return Err(ClientError::NoImages {
                path: arg.to_path_buf(),
            });
        }
        if !self.skipped.is_empty() {
            let mut names: Vec<String> = self
                .skipped
                .iter()
                .take(NAMES_IN_NOTE)
                .map(|p| p.display().to_string())
                .collect();
            if self.skipped.len() > NAMES_IN_NOTE {
                names.push("…".to_string());
            }
            out.notes.push(format!(
                "{}: skipped {} file{} without an image extension: {}",
                arg.display(),
                self.skipped.len(),
                if self.skipped.len() == 1 { "" } else { "s" },
                names.join(", ")
            ));
        }
        out.files.extend(self.files);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"x").unwrap();
        path
    }

    fn paths(e: &Expanded) -> Vec<&Path> {
        e.files.iter().map(|f| f.path.as_path()).collect()
    }

    #[test]
    fn directories_are_walked_in_name_order_skipping_non_images_with_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let b = touch(d, "b.PNG");
        let a = touch(d, "a.jpg");
        let nested = touch(d, "sub/c.webp");
        touch(d, "notes.txt");
        touch(d, ".hidden.png");
        touch(d, ".git/x.png");
        let e = expand(&[d.to_path_buf()]).unwrap();
        assert_eq!(paths(&e), [a.as_path(), b.as_path(), nested.as_path()]);
        assert_eq!(e.notes.len(), 1, "{:?}", e.notes);
        assert!(e.notes[0].contains("skipped 1 file ") && e.notes[0].contains("notes.txt"));
    }

    #[test]
    fn a_named_non_image_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let notes = touch(dir.path(), "notes.txt");
        let e = expand(std::slice::from_ref(&notes)).unwrap_err();
        assert!(matches!(e, ClientError::NotAnImage { .. }));
        assert!(
            e.to_string().starts_with(&notes.display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn patterns_expand_in_order_and_must_match_something() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let one = touch(d, "1.png");
        let two = touch(d, "2.png");
        touch(d, "3.txt");
        let pattern = d.join("*");
        let e = expand(&[two.clone(), pattern]).unwrap();
        assert_eq!(paths(&e), [two.as_path(), one.as_path(), two.as_path()]);
        assert_eq!(e.notes.len(), 1);
        let none = d.join("*.gif");
        let e = expand(&[none]).unwrap_err();
        assert!(matches!(e, ClientError::NoMatch { .. }), "{e}");
        let e = expand(&[d.join("*.txt")]).unwrap_err();
        assert!(matches!(e, ClientError::NoImages { .. }), "{e}");
    }

    #[test]
    fn a_missing_file_or_an_empty_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.png");
        let e = expand(std::slice::from_ref(&missing)).unwrap_err();
        assert!(
            e.to_string().starts_with(&missing.display().to_string()),
            "{e}"
        );
        let e = expand(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(matches!(e, ClientError::NoImages { .. }), "{e}");
    }
}
