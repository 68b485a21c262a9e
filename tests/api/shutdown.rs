//! The real binary: start-up failures and graceful shutdown on SIGTERM.

use std::time::Duration;

use futures_util::StreamExt;

use crate::common::{digit, spawn_app, weights_path, Server};

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
        let out = Server::builder().no_auth().weights(path).start_fails();
        let line = out
            .lines()
            .find(|l| l.starts_with("Error:"))
            .unwrap_or_else(|| panic!("no error line in: {out}"));
        assert!(line.contains(&path.display().to_string()), "{line}");
        assert!(line.contains(expect), "{line}");
    }
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish() {
    let mut server = Server::builder().no_auth().start();

    // A multipart body that arrives in two halves, with SIGTERM sent in between.
    let mut body =
        b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.png\"\r\n\r\n"
            .to_vec();
    body.extend(digit("one"));
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
    let request = server
        .client
        .post(server.url("/predict"))
        .header("content-type", "multipart/form-data; boundary=B")
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    let in_flight = tokio::spawn(request);
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = go_tx.send(());
    let res = in_flight.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    let status = server.exit_within(Duration::from_secs(15)).await;
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn a_sigterm_as_soon_as_it_listens_stops_it_gracefully() {
    // The harness returns once the `listening` line is out: the signal lands at once.
    let mut app = spawn_app();
    let status = app.stop(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}: {}", app.log());
}

#[tokio::test]
async fn a_stopped_app_closes_its_port() {
    let mut app = spawn_app();
    let url = app.url("/health");
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);
    let status = app.stop(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    assert!(reqwest::get(&url).await.is_err());
}
