//! How a test server is started: flags, environment, users and limits.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::commands::{output_text, MNIST_API};
use super::fixtures::{users_json, weights_path, Credentials, PASSWORD, SECRET, USER};
use super::server::Server;

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
        let cmd = self.command(dir.path());
        Server::launch(cmd, self.users_path(dir.path()), dir)
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
}
