//! `train --download` against a mirror on loopback: good files kept, corrupted ones refused.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mnist_api::data::download::{fetch_all, DownloadError};
use mnist_api::data::{self, FILES};

use common::mnist_input;

fn shared_mnist() -> Option<PathBuf> {
    mnist_input(|dir| {
        if FILES.iter().all(|f| dir.join(format!("{f}.gz")).is_file()) {
            Ok(dir.to_path_buf())
        } else {
            Err(format!(
                "gzipped MNIST files not found in {}",
                dir.display()
            ))
        }
    })
}

async fn serve(dir: PathBuf) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(warp::fs::dir(dir)).incoming(listener).run());
    addr
}

async fn download(addr: SocketAddr, into: &Path) -> Result<(), DownloadError> {
    let mirror = format!("http://{addr}");
    let into = into.to_path_buf();
    tokio::task::spawn_blocking(move || fetch_all(&mirror, &into, false))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn downloads_verifies_and_loads_the_four_files() {
    let Some(src) = shared_mnist() else { return };
    let addr = serve(src).await;
    let dest = tempfile::tempdir().unwrap();
    download(addr, dest.path()).await.unwrap();
    for f in FILES {
        assert!(dest.path().join(format!("{f}.gz")).is_file(), "{f}");
    }
    let mnist = data::Mnist::load(dest.path()).unwrap();
    assert_eq!((mnist.train.len(), mnist.test.len()), (60_000, 10_000));
    // A second run finds everything verified and fetches nothing (the mirror is gone).
    download("127.0.0.1:9".parse().unwrap(), dest.path())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupted_file_is_refused_and_deleted() {
    let Some(src) = shared_mnist() else { return };
    let mirror = tempfile::tempdir().unwrap();
    for f in FILES {
        std::fs::copy(
            src.join(format!("{f}.gz")),
            mirror.path().join(format!("{f}.gz")),
        )
        .unwrap();
    }
    // Valid gzip, wrong content: one label changed.
    let (_, mut labels) = data::read_file(&src, FILES[3]).unwrap();
    labels[100] = (labels[100] + 1) % 10;
    let out = std::fs::File::create(mirror.path().join(format!("{}.gz", FILES[3]))).unwrap();
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    gz.write_all(&labels).unwrap();
    gz.finish().unwrap();

    let addr = serve(mirror.path().to_path_buf()).await;
    let dest = tempfile::tempdir().unwrap();
    let err = download(addr, dest.path()).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DownloadError::Checksum { .. }), "{msg}");
    assert!(
        msg.contains(FILES[3]) && msg.contains("partial file was deleted"),
        "{msg}"
    );
    let left: Vec<String> = std::fs::read_dir(dest.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!left.iter().any(|n| n.contains(FILES[3])), "{left:?}");
    // The three good files were kept.
    assert_eq!(left.len(), 3, "{left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_file_on_the_mirror_is_an_http_error_naming_the_url() {
    let mirror = tempfile::tempdir().unwrap();
    let addr = serve(mirror.path().to_path_buf()).await;
    let dest = tempfile::tempdir().unwrap();
    let err = download(addr, dest.path()).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("http://{addr}/{}.gz", FILES[0])),
        "{err}"
    );
    assert!(err.contains("404"), "{err}");
}
