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

/// The one model this server serves, by the name the inference protocol uses.
pub const MODEL_NAME: &str = "mnist";

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
    /// One reload at a time; a second caller waits, then finds nothing changed.
    reloading: Mutex<()>,
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
        let versions = load_versions(&source, keep, &BTreeMap::new())?;
        Ok(Self {
            source,
            keep,
            loaded: ArcSwap::from_pointee(Loaded { versions }),
            reloading: Mutex::new(()),
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
        let found = list_versions(&self.source).unwrap_or_default();
        DiskSignature(
            found
                .into_iter()
                .map(|(v, path)| (v, Stamp::of(&path).ok()))
                .collect(),
        )
    }

    /// Reads the repository again and, if a version appeared, disappeared or changed, loads
    /// and checks the new files, then swaps the set at once. Blocking (it reads and hashes
    /// files): call it off the async executor. On error nothing changes.
    pub fn reload(&self) -> Result<Reloaded, RepositoryError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.loaded.load_full();
        let found = list_versions(&self.source)?;
        let wanted: Vec<(u64, PathBuf)> = found.into_iter().rev().take(self.keep).collect();
        let unchanged = wanted.len() == current.versions.len()
            && wanted.iter().all(|(v, path)| {
                current
                    .versions
                    .get(v)
                    .is_some_and(|m| Stamp::of(path).ok() == Some(m.stamp))
            });
        if unchanged {
            return Ok(Reloaded::Unchanged);
        }
        let versions = load_versions(&self.source, self.keep, &current.versions)?;
        let loaded: Vec<u64> = versions.keys().copied().collect();
        let latest = *loaded.last().unwrap_or(&0);
        self.loaded.store(Arc::new(Loaded { versions }));
        Ok(Reloaded::Swapped { loaded, latest })
    }
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
