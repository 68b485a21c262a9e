//! The server binary under test, on a free loopback port, stopped by SIGTERM or killed on drop.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::ops::Deref;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::commands::{output_text, MNIST_API};
use super::endpoint::Endpoint;
use super::fixtures::{users_json, weights_path, Credentials, PASSWORD, SECRET, USER};

/// Loading the weights and binding take well under a second; this is for a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How to start the server: [`Server::builder`] for the test defaults, [`Server::as_deployed`]
/// for a deployment's own environment.
pub struct ServerBuilder {
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    /// `None` is `--no-auth`.
    users: Option<Credentials>,
    users_file: Option<PathBuf>,
    weights: PathBuf,
    nofile: Option<u64>,
    /// No flags and no test defaults: the environment alone configures the server.
    as_deployed: bool,
}

impl ServerBuilder {
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<S: Into<OsString>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn envs<K: Into<OsString>, V: Into<OsString>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// `--no-auth`: `/predict` without a token, and no users file.
    pub fn no_auth(mut self) -> Self {
        self.users = None;
        self
    }

    /// Another user in the users file, besides [`USER`].
    pub fn user(mut self, name: &str, password: &str) -> Self {
        let users = self.users.as_mut().expect("a user for a --no-auth server");
        users.push((name.to_string(), password.to_string()));
        self
    }

    /// An existing users file, as it is, instead of one written for the test.
    pub fn users_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.users_file = Some(path.into());
        self
    }

    pub fn weights(mut self, path: impl Into<PathBuf>) -> Self {
        self.weights = path.into();
        self
    }

    /// Caps the server's open file descriptors (`ulimit -n`).
    pub fn nofile(mut self, limit: u64) -> Self {
        self.nofile = Some(limit);
        self
    }

    /// Starts the binary and waits until it listens.
    ///
    /// Blocking, so `#[test]`s can use it too; start-up is short enough not to matter to an
    /// async test's runtime.
    pub fn start(self) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = self.command(dir.path());
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
            users_file: self.users_path(dir.path()),
            _dir: dir,
        }
    }

    /// Runs the binary expecting it to stop before it serves; what it printed.
    pub fn start_fails(self) -> String {
        let dir = tempfile::tempdir().unwrap();
        let out = self
            .command(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = output_text(&out);
        assert!(!out.status.success(), "the server started: {text}");
        text
    }

    /// The flags the server gets, with its users file written into `dir`.
    pub(super) fn flags(&self, dir: &Path) -> Vec<OsString> {
        let users = self.users_path(dir);
        let mut flags: Vec<OsString> = vec!["--bind".into(), "127.0.0.1:0".into()];
        flags.extend(["--weights".into(), self.weights.clone().into()]);
        flags.extend(["--users".into(), users.clone().into()]);
        match &self.users {
            None => flags.push("--no-auth".into()),
            Some(list) if self.users_file.is_none() => {
                std::fs::write(&users, users_json(list)).unwrap();
            }
            Some(_) => {}
        }
        flags.extend(self.args.iter().cloned());
        flags
    }

    /// Whether only flags were asked for, which is all a server inside the test can take.
    pub(super) fn flags_only(&self) -> bool {
        self.env.is_empty() && self.nofile.is_none() && !self.as_deployed
    }

    fn users_path(&self, dir: &Path) -> PathBuf {
        self.users_file
            .clone()
            .unwrap_or_else(|| dir.join("users.json"))
    }

    fn command(&self, dir: &Path) -> Command {
        let mut cmd = Command::new(MNIST_API);
        if self.as_deployed {
            cmd.env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        } else {
            cmd.args(self.flags(dir))
                // No collector listens here: the default exporter would only log its failures.
                .env("OTEL_TRACES_EXPORTER", "none")
                // The server's own log filter, whatever the test runner was started with.
                .env_remove("RUST_LOG")
                .env("SECRET_KEY", std::str::from_utf8(SECRET).unwrap());
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(n) = self.nofile {
            // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd
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
    /// On 127.0.0.1:0 with the committed weights, [`USER`] in a users file of its own, tokens
    /// signed with [`SECRET`], no trace exporter and the default log filter.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            args: Vec::new(),
            env: Vec::new(),
            users: Some(vec![(USER.to_string(), PASSWORD.to_string())]),
            users_file: None,
            weights: weights_path(),
            nofile: None,
            as_deployed: false,
        }
    }

    /// With exactly `env` (and PATH), as a deployment starts it: no flags, no test defaults.
    pub fn as_deployed(env: &BTreeMap<String, String>) -> ServerBuilder {
        ServerBuilder {
            as_deployed: true,
            ..Self::builder()
        }
        .envs(env)
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
