//! The real binary against clients that hold connections open: stalled uploads, half-sent
//! headers, idle sockets past the descriptor limit, shutdown with idle connections left, and
//! what the log makes of bad requests.

mod common;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{digit, Server};

/// Reads until the server closes the connection; the bytes it sent first.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut out))
        .await
        .expect("the server kept the connection open")
        .ok();
    out
}

#[tokio::test]
async fn stalled_uploads_do_not_lock_out_other_clients_and_end_in_408() {
    let server = Server::builder()
        .no_auth()
        .args(["--max-in-flight", "8", "--body-timeout", "2"])
        .start();
    // Twice as many stalled uploads as there are in-flight permits: headers and three bytes of
    // a body announced as 999.
    let mut stalled = Vec::new();
    for _ in 0..16 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\n\
              Content-Length: 999\r\n\r\n--B",
        )
        .await
        .unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..4 {
        let res = tokio::time::timeout(
            Duration::from_secs(10),
            server.predict(None, vec![digit("one")]),
        )
        .await
        .expect("a prediction waited behind the stalled uploads");
        assert_eq!(res.status(), 200, "{:?}", res.text().await);
    }
    for mut s in stalled {
        let answer = read_to_close(&mut s, Duration::from_secs(15)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("\"code\":\"body_timeout\""), "{answer}");
    }
}

#[tokio::test]
async fn half_sent_headers_are_dropped_after_the_header_timeout() {
    let server = Server::builder()
        .no_auth()
        .args(["--header-timeout", "1"])
        .start();
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHo").await.unwrap();
    // Closed by the server well before this bound; before the timeout existed it never was.
    read_to_close(&mut s, Duration::from_secs(8)).await;
}

#[tokio::test]
async fn idle_connections_past_the_descriptor_limit_cannot_take_health_down() {
    let server = Server::builder().no_auth().nofile(1024).start();
    let mut idle = Vec::new();
    for _ in 0..1100 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"G").await.unwrap();
        idle.push(s);
    }
    for _ in 0..3 {
        let res = server
            .client
            .get(server.url("/health"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("/health did not answer under 1,100 idle connections");
        assert_eq!(res.status(), 200);
    }
    let log = server.log();
    assert!(
        log.matches("Too many open files").count() <= 1,
        "the descriptor limit was hit: {log}"
    );
}

#[tokio::test]
async fn sigterm_with_only_idle_connections_exits_at_once() {
    let mut server = Server::builder()
        .no_auth()
        .args(["--shutdown-timeout", "30"])
        .start();
    let mut idle = Vec::new();
    for i in 0..20 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        if i % 2 == 0 {
            // Half-sent headers.
            s.write_all(b"GET /heal").await.unwrap();
        } else {
            // A finished request on a connection kept alive.
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        }
        idle.push(s);
    }
    // The shutdown timeout is 30 s; idle connections must not be waited for at all.
    let status = server.stop(Duration::from_secs(3)).await;
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn bad_requests_do_not_turn_into_log_volume() {
    let mut server = Server::builder().no_auth().start();
    let client = &server.client;
    let huge_agent = "A".repeat(300 * 1024);
    for _ in 0..5 {
        let res = client
            .get(server.url("/nope"))
            .header("user-agent", &huge_agent)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
        let res = client
            .post(server.url("/predict"))
            .header("content-type", "text/plain")
            .body("not an image")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 415);
    }
    server.stop(Duration::from_secs(15)).await;
    let log = server.log();
    // Start-up and shutdown lines only: routine client errors are not logged by default.
    assert!(
        log.len() < 4096,
        "{} bytes of log:\n{}",
        log.len(),
        &log[..4096]
    );
    assert!(
        !log.contains("AAAAAAAAAA"),
        "a client's header reached the log"
    );
}

#[tokio::test]
async fn with_info_logging_each_failed_request_is_one_clipped_line() {
    let mut server = Server::builder().no_auth().env("RUST_LOG", "info").start();
    let client = &server.client;
    let huge_type = format!("text/{}", "x".repeat(100 * 1024));
    for _ in 0..5 {
        let res = client
            .post(server.url("/predict"))
            .header("content-type", &huge_type)
            .body("not an image")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 415);
    }
    server.stop(Duration::from_secs(15)).await;
    let log = server.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("not_multipart"))
        .collect();
    assert_eq!(lines.len(), 5, "{log}");
    for line in lines {
        assert!(line.contains(" INFO "), "{line}");
        assert!(line.len() < 2048, "{} bytes: {}", line.len(), &line[..300]);
    }
    let loud = log
        .lines()
        .filter(|l| l.contains("HTTP request") && (l.contains(" WARN ") || l.contains(" ERROR ")));
    assert_eq!(
        loud.count(),
        0,
        "a client's mistake logged above info: {log}"
    );
}

/// CPU time the process `pid` has used so far, user and system, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name is in parentheses and may hold spaces; utime and stime are the 12th
    // and 13th fields after it.
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().unwrap())
        .collect();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis((fields[0] + fields[1]) * 1000 / hz)
}

#[tokio::test]
async fn a_lone_request_keeps_one_thread_polling_for_the_stay_awake_window_and_no_longer() {
    let window = Duration::from_millis(300);
    let server = Server::builder()
        .no_auth()
        .args(["--stay-awake-us", &window.as_micros().to_string()])
        .start();
    let before = cpu_time(server.pid());
    let res = server.predict(None, vec![digit("seven")]).await;
    assert_eq!(res.status(), 200);
    tokio::time::sleep(window * 5).await;
    let spent = cpu_time(server.pid()) - before;
    // A thread polled (a fifth of the window allows for a busy test machine)...
    assert!(spent >= window / 5, "did not stay awake: {spent:?}");
    // ...and stopped: polling through the whole wait would have spent five windows.
    assert!(
        spent < window * 2,
        "kept polling past the window: {spent:?}"
    );
}
