//! The model repository: the versions of `mnist` on disk, the ones loaded, and reloads that
//! swap them atomically.
//!
//! Laid out as Triton lays out a model repository: `DIR/mnist/<version>/model.safetensors`,
//! versions positive integers, the highest served by default. A single `--weights FILE` is a
//! repository of one version, `1`.
//!
//! A reload reads and checks every new file off the request path, then swaps the whole set
//! in one atomic store: a request holds the [`ModelVersion`] it started with (an `Arc`), so it
//! finishes on those weights while new requests get the new ones. If the newest version's
//! file is unusable (truncated, half-written, wrong shapes), nothing changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::model::Net;
use crate::served::{ModelInfo, ModelRef};
use crate::weights::{self, WeightsError};

pub use crate::served::MODEL_NAME;

/// The weights file inside a version directory.
pub const MODEL_FILE: &str = "model.safetensors";

/// Where the versions come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// One weights file, served as version 1.
    File(PathBuf),
    /// A Triton-style repository holding `mnist/<version>/model.safetensors`.
    Dir(PathBuf),
}

/// One loaded version: the network and what answers say about it.
#[derive(Debug)]
pub struct ModelVersion {
    /// The version number.
    pub version: u64,
    /// The network, shared read-only by the model workers.
    pub net: Arc<Net>,
    /// Name, version, architecture and hash, as answers and spans carry them.
    pub info: ModelInfo,
    /// The file it came from.
    pub path: PathBuf,
    stamp: Stamp,
}

impl ModelVersion {
    /// What answers name as their model.
    pub fn model_ref(&self) -> &ModelRef {
        &self.info.model
    }
}

/// Why the repository could not be read or a version used.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// Listing the repository failed.
    #[error("{path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// No version directory holds a weights file.
    #[error("{0}: no version of `{MODEL_NAME}` found (expected {MODEL_NAME}/<version>/{MODEL_FILE}, versions 1, 2, …)")]
    Empty(PathBuf),
    /// A version's file is not usable; what was served before still is.
    #[error("version {version}: {source}")]
    Invalid {
        /// The version that failed.
        version: u64,
        /// Why (boxed: weights errors are large and requests carry this type).
        source: Box<WeightsError>,
    },
    /// The reload itself failed (a panic while loading); nothing changed.
    #[error("the reload was interrupted; the model loaded before is still served")]
    Interrupted,
    /// A version that is not loaded was asked for.
    #[error("model `{MODEL_NAME}` has no loaded version {0}")]
    UnknownVersion(String),
}

/// What a reload did.
#[derive(Clone, Debug, PartialEq)]
pub enum Reloaded {
    /// Nothing on disk changed since the last look.
    Unchanged,
    /// A new set of versions is served; the highest is `latest`.
    Swapped {
        /// Versions now loaded, ascending.
        loaded: Vec<u64>,
        /// The version served by default.
        latest: u64,
    },
}

/// The loaded versions and how to reload them.
#[derive(Debug)]
pub struct Repository {
    source: Source,
    keep: usize,
    loaded: ArcSwap<Loaded>,
    /// The repository on disk when the loaded set was read from it. One reload at a time
    /// holds it; a second caller waits, then finds nothing changed.
    read_from: Mutex<DiskSignature>,
}

#[derive(Debug)]
struct Loaded {
    /// Never empty.
    versions: BTreeMap<u64, Arc<ModelVersion>>,
}

/// What the repository looked like on disk at one look (see [`Repository::disk_signature`]).
#[derive(Clone, Debug, PartialEq)]
pub struct DiskSignature(Vec<(u64, Option<Stamp>)>);

/// What identifies one version of a file without reading it (the trainer renames a new file
/// into place, which changes the inode; an in-place rewrite changes size or time).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Stamp {
    #[cfg(unix)]
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Ok(Self {
            #[cfg(unix)]
            ino: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

impl Repository {
    /// Loads the `keep` highest versions (at least one) of `source`; fails if the newest
    /// cannot be used, so a server never starts on weights other than the ones asked for.
    pub fn open(source: Source, keep: usize) -> Result<Self, RepositoryError> {
        let keep = keep.max(1);
        let signature = disk_signature(&source);
        let versions = load_versions(&source, keep, &BTreeMap::new())?;
        Ok(Self {
            source,
            keep,
            loaded: ArcSwap::from_pointee(Loaded { versions }),
            read_from: Mutex::new(signature),
        })
    }

    /// The version served by default: the highest loaded.
    pub fn latest(&self) -> Arc<ModelVersion> {
        let loaded = self.loaded.load();
        match loaded.versions.last_key_value() {
            Some((_, v)) => Arc::clone(v),
            // `open` and `reload` never store an empty set.
            None => unreachable!("the repository always holds a version"),
        }
    }

    /// A loaded version by its number as the protocol spells it (`"2"`).
    pub fn version(&self, version: &str) -> Result<Arc<ModelVersion>, RepositoryError> {
        let unknown = || RepositoryError::UnknownVersion(crate::clip::clip(version).to_string());
        let v: u64 = version.parse().map_err(|_| unknown())?;
        self.loaded
            .load()
            .versions
            .get(&v)
            .map(Arc::clone)
            .ok_or_else(unknown)
    }

    /// The loaded versions, ascending.
    pub fn loaded_versions(&self) -> Vec<u64> {
        self.loaded.load().versions.keys().copied().collect()
    }

    /// Where the versions come from.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The versions on disk and their files' stamps: equal signatures, nothing to reload.
    pub fn disk_signature(&self) -> DiskSignature {
        disk_signature(&self.source)
    }

    /// Reads the repository again and, if a version appeared, disappeared or changed, loads
    /// and checks the new files, then swaps the set at once. Blocking (it reads and hashes
    /// files): call it off the async executor. On error nothing changes.
    pub fn reload(&self) -> Result<Reloaded, RepositoryError> {
        let mut read_from = self.read_from.lock().unwrap_or_else(|p| p.into_inner());
        let signature = disk_signature(&self.source);
        if signature == *read_from {
            return Ok(Reloaded::Unchanged);
        }
        let current = self.loaded.load_full();
        let versions = load_versions(&self.source, self.keep, &current.versions)?;
        let loaded: Vec<u64> = versions.keys().copied().collect();
        let latest = *loaded.last().unwrap_or(&0);
        self.loaded.store(Arc::new(Loaded { versions }));
        // Only a successful read is remembered: asked again, a broken file is reported again.
        *read_from = signature;
        Ok(Reloaded::Swapped { loaded, latest })
    }
}

/// See [`Repository::disk_signature`]. Stamped before any file is read, so a file replaced
/// during a load is seen as changed at the next look.
fn disk_signature(source: &Source) -> DiskSignature {
    let found = list_versions(source).unwrap_or_default();
    DiskSignature(
        found
            .into_iter()
            .map(|(v, path)| (v, Stamp::of(&path).ok()))
            .collect(),
    )
}

/// The versions on disk, ascending, with their files.
fn list_versions(source: &Source) -> Result<Vec<(u64, PathBuf)>, RepositoryError> {
    let dir = match source {
        Source::File(path) => return Ok(vec![(1, path.clone())]),
        Source::Dir(dir) => dir.join(MODEL_NAME),
    };
    let entries = std::fs::read_dir(&dir).map_err(|source| RepositoryError::Io {
        path: dir.clone(),
        source,
    })?;
    let mut versions = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        // Anything else (a trainer's temporary directory, `config.pbtxt`) is not a version.
        let Some(v) = name.to_str().and_then(parse_version) else {
            continue;
        };
        let file = entry.path().join(MODEL_FILE);
        if file.is_file() {
            versions.push((v, file));
        }
    }
    versions.sort_unstable_by_key(|(v, _)| *v);
    Ok(versions)
}

/// Adds the next version to the repository at `dir`: `write` fills a file in a temporary
/// directory beside the versions, which is then renamed to `mnist/<highest + 1>` in one step,
/// so a server polling the repository never sees a half-written version. Returns the version
/// and its file.
pub fn publish(
    dir: &Path,
    write: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<(u64, PathBuf)> {
    use anyhow::Context;
    let models = dir.join(MODEL_NAME);
    std::fs::create_dir_all(&models).with_context(|| format!("creating {}", models.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".incoming-")
        .tempdir_in(&models)
        .with_context(|| format!("creating a temporary directory in {}", models.display()))?;
    write(&staging.path().join(MODEL_FILE))?;
    let staged = staging.keep();
    // Another trainer may publish at the same time: the rename fails if the version exists
    // (a non-empty directory), and the next number is tried.
    for _ in 0..100 {
        let highest = list_versions(&Source::Dir(dir.to_path_buf()))
            .map_err(anyhow::Error::from)?
            .last()
            .map_or(0, |(v, _)| *v);
        let version = highest + 1;
        let target = models.join(version.to_string());
        if std::fs::rename(&staged, &target).is_ok() {
            return Ok((version, target.join(MODEL_FILE)));
        }
    }
    let _ = std::fs::remove_dir_all(&staged);
    anyhow::bail!("{}: could not claim a new version number", models.display())
}

/// A version directory's number: a positive integer, written plainly.
pub fn parse_version(name: &str) -> Option<u64> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) || name.starts_with('0') {
        return None;
    }
    name.parse().ok()
}

/// Loads the `keep` highest versions, reusing those in `current` whose file is unchanged.
/// The newest must load; an older one that does not is left out with a warning.
fn load_versions(
    source: &Source,
    keep: usize,
    current: &BTreeMap<u64, Arc<ModelVersion>>,
) -> Result<BTreeMap<u64, Arc<ModelVersion>>, RepositoryError> {
    let found = list_versions(source)?;
    let mut versions = BTreeMap::new();
    for (i, (version, path)) in found.into_iter().rev().take(keep).enumerate() {
        let stamp = Stamp::of(&path).ok();
        if let Some(m) = current.get(&version) {
            if Some(m.stamp) == stamp {
                versions.insert(version, Arc::clone(m));
                continue;
            }
        }
        match load_one(version, &path) {
            Ok(m) => {
                versions.insert(version, Arc::new(m));
            }
            Err(e) if i == 0 => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "older model version left out");
            }
        }
    }
    if versions.is_empty() {
        let dir = match source {
            Source::File(p) | Source::Dir(p) => p.clone(),
        };
        return Err(RepositoryError::Empty(dir));
    }
    Ok(versions)
}

fn load_one(version: u64, path: &Path) -> Result<ModelVersion, RepositoryError> {
    let invalid = |source| RepositoryError::Invalid {
        version,
        source: Box::new(source),
    };
    // Stamped before reading: a file replaced during the read is then seen as changed at the
    // next look, never as the version just loaded.
    let stamp = Stamp::of(path).map_err(|source| {
        invalid(WeightsError::Io {
            path: path.to_path_buf(),
            source,
        })
    })?;
    // The server runs on the CPU: its forward passes are small and batched across requests.
    let loaded = weights::load(path, &candle_core::Device::Cpu).map_err(invalid)?;
    let info = ModelInfo::of(&loaded, version);
    Ok(ModelVersion {
        version,
        net: Arc::new(loaded.net),
        info,
        path: path.to_path_buf(),
        stamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed() -> Vec<u8> {
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(weights::DEFAULT_PATH)).unwrap()
    }

    fn put(dir: &Path, bytes: &[u8]) -> u64 {
        publish(dir, |file| Ok(std::fs::write(file, bytes)?))
            .unwrap()
            .0
    }

    #[test]
    fn versions_are_plain_positive_integers() {
        assert_eq!(parse_version("1"), Some(1));
        assert_eq!(parse_version("12"), Some(12));
        for bad in ["", "0", "01", "-1", "1a", ".incoming-x", "+2"] {
            assert_eq!(parse_version(bad), None, "{bad}");
        }
    }

    #[test]
    fn publish_claims_the_next_number_and_leaves_no_staging_behind() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(put(dir.path(), b"x"), 1);
        assert_eq!(put(dir.path(), b"y"), 2);
        std::fs::create_dir(dir.path().join("mnist/not-a-version")).unwrap();
        assert_eq!(put(dir.path(), b"z"), 3);
        let names: Vec<String> = std::fs::read_dir(dir.path().join(MODEL_NAME))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(names.is_empty(), "{names:?}");
        let file = dir.path().join("mnist/2").join(MODEL_FILE);
        assert_eq!(std::fs::read(file).unwrap(), b"y");
    }

    #[test]
    fn the_newest_must_load_and_older_broken_ones_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let good = committed();
        put(dir.path(), b"not weights");
        put(dir.path(), &good);
        let repo = Repository::open(Source::Dir(dir.path().into()), 2).unwrap();
        assert_eq!(repo.loaded_versions(), vec![2]);
        assert!(matches!(repo.reload(), Ok(Reloaded::Unchanged)));

        put(dir.path(), &good[..100]);
        let e = repo.reload().unwrap_err();
        assert!(
            matches!(e, RepositoryError::Invalid { version: 3, .. }),
            "{e}"
        );
        assert_eq!(repo.latest().version, 2, "the served model is untouched");
        assert!(matches!(
            repo.version("3"),
            Err(RepositoryError::UnknownVersion(_))
        ));

        let empty = tempfile::tempdir().unwrap();
        std::fs::create_dir(empty.path().join(MODEL_NAME)).unwrap();
        assert!(matches!(
            Repository::open(Source::Dir(empty.path().into()), 2),
            Err(RepositoryError::Empty(_))
        ));
    }
}
