//! MNIST in the IDX format: reading (gzip or raw, picked by what is on disk) with full validation.
//!
//! Training, evaluation, the tests and the benchmarks all read the data through [`Mnist::load`],
//! so there is exactly one place that knows the file layout.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use sha2::{Digest, Sha256};

pub mod download;

/// Side length of an MNIST image.
pub const IMAGE_SIDE: usize = 28;
/// Pixels in one MNIST image.
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// The four files of the data set, by their canonical (decompressed) names.
pub const FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Why a data file could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Neither `name` nor `name.gz` exists in the directory.
    #[error("{dir}: neither {name} nor {name}.gz found (set --data-dir or MNIST_DIR, or run `make data`)")]
    Missing { dir: PathBuf, name: String },
    /// The file exists but could not be read or decompressed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The content is not a valid MNIST IDX file.
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

/// A set of images with their labels, pixels as raw bytes (0 = background, 255 = ink).
#[derive(Clone, Debug)]
pub struct Split {
    /// `len() * IMAGE_PIXELS` bytes, row-major, one image after another.
    pub images: Vec<u8>,
    /// One label (0..=9) per image.
    pub labels: Vec<u8>,
}

impl Split {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split holds no example.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_PIXELS..(i + 1) * IMAGE_PIXELS]
    }

    /// The first `n` examples (or all of them if there are fewer).
    pub fn take(&self, n: usize) -> Split {
        let n = n.min(self.len());
        Split {
            images: self.images[..n * IMAGE_PIXELS].to_vec(),
            labels: self.labels[..n].to_vec(),
        }
    }
}

/// The whole data set plus a fingerprint of what was read.
#[derive(Clone, Debug)]
pub struct Mnist {
    /// 60,000 training examples.
    pub train: Split,
    /// 10,000 test examples.
    pub test: Split,
    /// SHA-256 over the decompressed content of the four files, in [`FILES`] order.
    pub sha256: String,
}

impl Mnist {
    /// Reads and validates the four files from `dir`.
    pub fn load(dir: &Path) -> Result<Self, DataError> {
        let mut hasher = Sha256::new();
        let mut read = |name: &str| -> Result<(PathBuf, Vec<u8>), DataError> {
            let (path, bytes) = read_file(dir, name)?;
            hasher.update(&bytes);
            Ok((path, bytes))
        };
        let train = split(read(FILES[0])?, read(FILES[1])?)?;
        let test = split(read(FILES[2])?, read(FILES[3])?)?;
        Ok(Mnist {
            train,
            test,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// Reads only the test split (what evaluation needs).
    pub fn load_test(dir: &Path) -> Result<Split, DataError> {
        split(read_file(dir, FILES[2])?, read_file(dir, FILES[3])?)
    }
}

/// Whether `dir` holds all four files, raw or gzipped.
pub fn is_present(dir: &Path) -> bool {
    FILES.iter().all(|name| locate(dir, name).is_some())
}

fn locate(dir: &Path, name: &str) -> Option<PathBuf> {
    let raw = dir.join(name);
    if raw.is_file() {
        return Some(raw);
    }
    let gz = dir.join(format!("{name}.gz"));
    gz.is_file().then_some(gz)
}

/// Reads `name` (or `name.gz`) from `dir`, decompressed.
pub fn read_file(dir: &Path, name: &str) -> Result<(PathBuf, Vec<u8>), DataError> {
    let path = locate(dir, name).ok_or_else(|| DataError::Missing {
        dir: dir.to_path_buf(),
        name: name.to_string(),
    })?;
    let io = |source| DataError::Io {
        path: path.clone(),
        source,
    };
    let raw = fs::read(&path).map_err(io)?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::with_capacity(raw.len() * 4);
        GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::Invalid {
                path: path.clone(),
                problem: format!("gzip stream is corrupt or truncated ({e})"),
            })?;
        out
    } else {
        raw
    };
    Ok((path, bytes))
}

fn split(images: (PathBuf, Vec<u8>), labels: (PathBuf, Vec<u8>)) -> Result<Split, DataError> {
    let (image_path, image_bytes) = images;
    let (label_path, label_bytes) = labels;
    let (dims, pixels) = parse_idx(&image_path, &image_bytes, IMAGES_MAGIC, 3)?;
    if dims[1] != IMAGE_SIDE || dims[2] != IMAGE_SIDE {
        return Err(DataError::Invalid {
            path: image_path,
            problem: format!(
                "images are {}x{}, expected {IMAGE_SIDE}x{IMAGE_SIDE}",
                dims[1], dims[2]
            ),
        });
    }
    let (label_dims, labels) = parse_idx(&label_path, &label_bytes, LABELS_MAGIC, 1)?;
    if label_dims[0] != dims[0] {
        return Err(DataError::Invalid {
            path: label_path,
            problem: format!(
                "count mismatch: {} labels but {} images in {}",
                label_dims[0],
                dims[0],
                image_path.display()
            ),
        });
    }
    if let Some(i) = labels.iter().position(|&l| l > 9) {
        return Err(DataError::Invalid {
            path: label_path,
            problem: format!("label {} at index {i} is not a digit 0-9", labels[i]),
        });
    }
    Ok(Split {
        images: pixels.to_vec(),
        labels: labels.to_vec(),
    })
}

/// Checks the IDX header (magic, rank, sizes) and returns the dimensions and the payload.
fn parse_idx<'a>(
    path: &Path,
    bytes: &'a [u8],
    magic: u32,
    rank: usize,
) -> Result<(Vec<usize>, &'a [u8]), DataError> {
    let invalid = |problem: String| DataError::Invalid {
        path: path.to_path_buf(),
        problem,
    };
    let header_len = 4 + 4 * rank;
    if bytes.len() < 4 {
        return Err(invalid(format!(
            "truncated: {} bytes, too short for an IDX header",
            bytes.len()
        )));
    }
    let found = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if found != magic {
        let found_rank = found & 0xff;
        let what = if found & 0xffff_ff00 == 0x0800 {
            format!("an IDX file of rank {found_rank}")
        } else {
            "not an IDX file of unsigned bytes".to_string()
        };
        return Err(invalid(format!(
            "wrong magic number 0x{found:08x} ({what}), expected 0x{magic:08x}"
        )));
    }
    if bytes.len() < header_len {
        return Err(invalid(format!(
            "truncated: {} bytes, header alone needs {header_len}",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| invalid(format!("dimensions {dims:?} overflow")))?;
    let payload = &bytes[header_len..];
    if payload.len() < expected {
        return Err(invalid(format!(
            "truncated: header announces {dims:?} = {expected} bytes of data, found {}",
            payload.len()
        )));
    }
    if payload.len() > expected {
        return Err(invalid(format!(
            "{} unexpected trailing bytes after {dims:?} = {expected} bytes of data",
            payload.len() - expected
        )));
    }
    Ok((dims, payload))
}

/// Builds an IDX file in memory; the inverse of the reader.
#[cfg(test)]
fn encode_idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    out.extend_from_slice(&magic.to_be_bytes());
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_set(dir: &Path, prefix: &str, n: u32, labels: &[u8], gz: bool) {
        let images = encode_idx(IMAGES_MAGIC, &[n, 28, 28], &vec![7u8; n as usize * 784]);
        let labels = encode_idx(LABELS_MAGIC, &[labels.len() as u32], labels);
        for (name, bytes) in [
            (format!("{prefix}-images-idx3-ubyte"), images),
            (format!("{prefix}-labels-idx1-ubyte"), labels),
        ] {
            if gz {
                let f = fs::File::create(dir.join(format!("{name}.gz"))).unwrap();
                let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
                enc.write_all(&bytes).unwrap();
                enc.finish().unwrap();
            } else {
                fs::write(dir.join(name), bytes).unwrap();
            }
        }
    }

    fn err_text(dir: &Path) -> String {
        Mnist::load(dir).unwrap_err().to_string()
    }

    #[test]
    fn reads_raw_and_gzip_files() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), "train", 3, &[0, 1, 9], true);
        write_set(dir.path(), "t10k", 2, &[4, 5], false);
        let m = Mnist::load(dir.path()).unwrap();
        assert_eq!(m.train.len(), 3);
        assert_eq!(m.test.labels, vec![4, 5]);
        assert_eq!(m.train.image(2), &[7u8; 784][..]);
        assert_eq!(m.sha256.len(), 64);
    }

    #[test]
    fn missing_file_names_directory_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = err_text(dir.path());
        assert!(e.contains("train-images-idx3-ubyte"), "{e}");
    }

    #[test]
    fn wrong_magic_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), "train", 2, &[1, 2], false);
        write_set(dir.path(), "t10k", 2, &[1, 2], false);
        // A labels file where images are expected: rank 1 instead of 3.
        fs::copy(
            dir.path().join("train-labels-idx1-ubyte"),
            dir.path().join("train-images-idx3-ubyte"),
        )
        .unwrap();
        let e = err_text(dir.path());
        assert!(e.contains("train-images-idx3-ubyte"), "{e}");
        assert!(e.contains("wrong magic number 0x00000801"), "{e}");
    }

    #[test]
    fn truncated_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), "train", 3, &[0, 1, 2], false);
        write_set(dir.path(), "t10k", 2, &[1, 2], false);
        let p = dir.path().join("train-images-idx3-ubyte");
        let bytes = fs::read(&p).unwrap();
        fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
        let e = err_text(dir.path());
        assert!(e.contains("truncated"), "{e}");
        assert!(e.contains("train-images-idx3-ubyte"), "{e}");
    }

    #[test]
    fn truncated_gzip_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), "train", 3, &[0, 1, 2], true);
        write_set(dir.path(), "t10k", 2, &[1, 2], true);
        let p = dir.path().join("t10k-labels-idx1-ubyte.gz");
        let bytes = fs::read(&p).unwrap();
        fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let e = err_text(dir.path());
        assert!(e.contains("t10k-labels-idx1-ubyte.gz"), "{e}");
        assert!(e.contains("corrupt or truncated"), "{e}");
    }

    #[test]
    fn count_mismatch_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), "train", 3, &[0, 1], false);
        write_set(dir.path(), "t10k", 2, &[1, 2], false);
        let e = err_text(dir.path());
        assert!(e.contains("count mismatch: 2 labels but 3 images"), "{e}");
    }

    #[test]
    fn label_out_of_range_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), "train", 2, &[3, 10], false);
        write_set(dir.path(), "t10k", 2, &[1, 2], false);
        let e = err_text(dir.path());
        assert!(e.contains("label 10 at index 1"), "{e}");
    }

    #[test]
    fn trailing_bytes_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), "train", 2, &[3, 1], false);
        write_set(dir.path(), "t10k", 2, &[1, 2], false);
        let p = dir.path().join("t10k-labels-idx1-ubyte");
        let mut bytes = fs::read(&p).unwrap();
        bytes.push(0);
        fs::write(&p, bytes).unwrap();
        let e = err_text(dir.path());
        assert!(e.contains("1 unexpected trailing bytes"), "{e}");
    }
}
