//! Fetches the four MNIST files from a mirror, verifying the SHA-256 of their decompressed
//! content before they are kept.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flate2::read::GzDecoder;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use super::FILES;

/// A public mirror serving `<name>.gz` for each file (PyTorch's copy of the original set).
pub const DEFAULT_MIRROR: &str = "https://ossci-datasets.s3.amazonaws.com/mnist";

/// SHA-256 of the decompressed files, in [`FILES`] order.
pub const SHA256: [&str; 4] = [
    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
];

/// Why a download failed. Every variant names the file or URL.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The HTTP request failed or returned an error status.
    #[error("{url}: {problem}")]
    Http { url: String, problem: String },
    /// Writing the file failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The content does not match the published checksum; nothing was kept.
    #[error("{path}: checksum mismatch (expected sha256 {expected}, got {actual}); the partial file was deleted")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
}

/// Downloads every missing or unverifiable file of the set into `dir`, as `<name>.gz`.
pub fn fetch_all(mirror: &str, dir: &Path, progress: bool) -> Result<(), DownloadError> {
    let io = |source| DownloadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(io)?;
    for (name, sha) in FILES.iter().zip(SHA256) {
        if verified(dir, name, sha) {
            if progress {
                eprintln!("{}: present, checksum ok", dir.join(name).display());
            }
            continue;
        }
        fetch_one(mirror, dir, name, sha, progress)?;
    }
    Ok(())
}

/// Whether the file (raw or gz) already in `dir` decompresses to the expected content.
fn verified(dir: &Path, name: &str, sha: &str) -> bool {
    super::read_file(dir, name)
        .map(|(_, bytes)| hex::encode(Sha256::digest(&bytes)) == sha)
        .unwrap_or(false)
}

fn fetch_one(
    mirror: &str,
    dir: &Path,
    name: &str,
    expected: &str,
    progress: bool,
) -> Result<(), DownloadError> {
    let url = format!("{}/{name}.gz", mirror.trim_end_matches('/'));
    let target = dir.join(format!("{name}.gz"));
    let http = |problem: String| DownloadError::Http {
        url: url.clone(),
        problem,
    };
    let response = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(15))
        .timeout_read(Duration::from_secs(60))
        .build()
        .get(&url)
        .call()
        .map_err(|e| http(e.to_string()))?;
    let len = response
        .header("content-length")
        .and_then(|v| v.parse::<u64>().ok());
    let bar = if progress {
        let b = len.map_or_else(ProgressBar::new_spinner, ProgressBar::new);
        if let Ok(style) =
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})")
        {
            b.set_style(style.progress_chars("=> "));
        }
        b.set_message(name.to_string());
        b
    } else {
        ProgressBar::hidden()
    };

    let io = |source| DownloadError::Io {
        path: target.clone(),
        source,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".part")
        .tempfile_in(dir)
        .map_err(io)?;
    let mut reader = bar.wrap_read(response.into_reader());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).map_err(|e| http(e.to_string()))?;
        if n == 0 {
            break;
        }
        tmp.write_all(&buf[..n]).map_err(io)?;
    }
    bar.finish_and_clear();
    tmp.as_file().sync_all().map_err(io)?;

    // The checksum is of the decompressed content: gzip wrappers differ between mirrors.
    let compressed = fs::read(tmp.path()).map_err(io)?;
    let mut hasher = Sha256::new();
    let decompressed = io::copy(&mut GzDecoder::new(&compressed[..]), &mut hasher);
    let actual = match decompressed {
        Ok(_) => hex::encode(hasher.finalize()),
        Err(e) => format!("<not a valid gzip stream: {e}>"),
    };
    if actual != expected {
        // Dropping the temporary file deletes it.
        return Err(DownloadError::Checksum {
            path: target,
            expected: expected.to_string(),
            actual,
        });
    }
    tmp.persist(&target).map_err(|e| io(e.error))?;
    if progress {
        eprintln!("{}: downloaded, checksum ok", target.display());
    }
    Ok(())
}
