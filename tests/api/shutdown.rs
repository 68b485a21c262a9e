//! The real binary: start-up failures and graceful shutdown on SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{png, weights_path};

fn binary() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mnist-api"));
    c.env_remove("SECRET_KEY")
        .env("RUST_LOG", "info")
        .env("OTEL_TRACES_EXPORTER", "none");
    c
}

#[test]
fn missing_or_broken_weights_stop_start_up_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated.safetensors");
    let bytes = std::fs::read(weights_path()).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let missing = dir.path().join("missing.safetensors");
    for (path, expect) in [
        (&missing, "No such file"),
        (&truncated, "not a valid safetensors file"),
    ] {
        let out = binary()
            .args(["--bind", "127.0.0.1:0", "--no-auth", "--weights"])
            .arg(path)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err
            .lines()
            .find(|l| l.starts_with("Error:"))
            .unwrap_or_else(|| panic!("no error line in: {err}"));
        assert!(line.contains(&path.display().to_string()), "{line}");
        assert!(line.contains(expect), "{line}");
    }
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mnist-api"))
        .args(["--bind", "127.0.0.1:0", "--no-auth", "--weights"])
        .arg(weights_path())
        .env("RUST_LOG", "info")
        .env("OTEL_TRACES_EXPORTER", "none")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (addr_tx, mut addr_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.split("address=").nth(1) {
                let _ = addr_tx.send(rest.split_whitespace().next().unwrap().to_string());
            }
        }
    });
    let addr = tokio::time::timeout(Duration::from_secs(30), addr_rx.recv())
        .await
        .unwrap()
        .unwrap();

    // A multipart body that arrives in two halves, with SIGTERM sent in between.
    let mut g = image::GrayImage::new(28, 28);
    for y in 5..23 {
        for x in 13..16 {
            g.put_pixel(x, y, image::Luma([255]));
        }
    }
    let mut body =
        b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.png\"\r\n\r\n"
            .to_vec();
    body.extend(png(g));
    body.extend_from_slice(b"\r\n--B--\r\n");
    let (first, second) = body.split_at(body.len() / 2);
    let (first, second) = (first.to_vec(), second.to_vec());
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(
        futures_util::stream::once(async move {
            let _ = go_rx.await;
            Ok(second)
        }),
    );
    use futures_util::StreamExt;
    let request = reqwest::Client::new()
        .post(format!("http://{addr}/predict"))
        .header("content-type", "multipart/form-data; boundary=B")
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    let in_flight = tokio::spawn(request);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = go_tx.send(());
    let res = in_flight.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("server did not exit after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn a_stopped_app_closes_its_port() {
    let app = crate::helpers::spawn_app().await;
    let url = app.url("/health");
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);
    tokio::time::timeout(Duration::from_secs(10), app.shut_down())
        .await
        .expect("graceful shutdown hung");
    assert!(reqwest::get(&url).await.is_err());
}
