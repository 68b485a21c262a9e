//! The server binary under test, on a free loopback port, stopped by SIGTERM or killed on drop.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::endpoint::Endpoint;

/// Loading the weights and binding take well under a second; this is for a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The running binary. Derefs to its [`Endpoint`].
pub struct Server {
    endpoint: Endpoint,
    child: Child,
    log: Arc<Mutex<String>>,
    drains: Vec<JoinHandle<()>>,
    users_file: PathBuf,
    _dir: TempDir,
}

/// The server with the test defaults: [`USER`] may log in, tokens are signed with [`SECRET`].
pub fn spawn_app() -> Server {
    Server::builder().start()
}

impl Server {
    /// Runs `cmd`, keeping `dir` (which holds its files) while it runs, and waits until it
    /// listens.
    pub(super) fn launch(mut cmd: Command, users_file: PathBuf, dir: TempDir) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let drains = vec![
            drain(child.stdout.take().unwrap(), &log, addr_tx.clone()),
            drain(child.stderr.take().unwrap(), &log, addr_tx),
        ];
        let Ok(addr) = addr_rx.recv_timeout(START_TIMEOUT) else {
            let _ = child.kill();
            let status = child.wait().unwrap();
            for d in drains {
                let _ = d.join();
            }
            panic!(
                "the server did not start ({status}): {cmd:?}\n{}",
                log.lock().unwrap()
            );
        };
        Server {
            endpoint: Endpoint::new(addr),
            child,
            log,
            drains,
            users_file,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn users_file(&self) -> &Path {
        &self.users_file
    }

    /// Everything the server wrote so far, stdout and stderr.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM: what `docker stop` and Kubernetes send.
    pub fn terminate(&self) {
        // SAFETY: signals our own child, which is not reaped before `exit_within` sees it exit.
        assert_eq!(
            unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) },
            0,
            "{}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits for the server to exit; its log is complete afterwards.
    pub async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {limit:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        for d in self.drains.drain(..) {
            d.join().unwrap();
        }
        status
    }

    /// [`terminate`](Self::terminate), then [`exit_within`](Self::exit_within) `limit`.
    pub async fn stop(&mut self, limit: Duration) -> ExitStatus {
        self.terminate();
        self.exit_within(limit).await
    }
}

impl Deref for Server {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `pipe` to its end into `log`, so the server never blocks on a full pipe, and sends
/// the address of the `listening` line.
fn drain(
    pipe: impl Read + Send + 'static,
    log: &Arc<Mutex<String>>,
    addr: mpsc::Sender<SocketAddr>,
) -> JoinHandle<()> {
    let log = Arc::clone(log);
    let echo = std::env::var_os("TEST_LOG").is_some();
    std::thread::spawn(move || {
        let mut pipe = BufReader::new(pipe);
        let mut line = Vec::new();
        while pipe.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line);
            if let Some(a) = listening_address(&text) {
                let _ = addr.send(a);
            }
            if echo {
                eprint!("[server] {text}");
            }
            log.lock().unwrap().push_str(&text);
            line.clear();
        }
    })
}

fn listening_address(line: &str) -> Option<SocketAddr> {
    line.split("address=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
