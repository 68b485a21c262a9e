//! `mnist-api user …`: edit the users file. Passwords come from a prompt or stdin, never argv
//! (argv is visible to every user of the machine in `ps`).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::auth::Users;
use crate::config::UserAction;

/// Applies `action` to the users file at `path`.
pub fn run(action: &UserAction, path: &Path) -> anyhow::Result<()> {
    match action {
        UserAction::List => {
            let users = Users::load(path)?;
            for name in users.names() {
                if users.is_admin(name) {
                    println!("{name} (admin)");
                } else {
                    println!("{name}");
                }
            }
        }
        UserAction::Add { name, admin } => {
            let password = read_password(name)?;
            let existed = update(path, |users| {
                let existed = users.contains(name);
                users
                    .set_password(name, &password)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                if *admin {
                    users.set_admin(name, true);
                }
                Ok(existed)
            })?;
            let verb = if existed { "updated" } else { "added" };
            let role = if *admin { " (admin)" } else { "" };
            eprintln!("{}: {verb} user `{name}`{role}", path.display());
        }
        UserAction::Passwd { name } => {
            // Checked before the prompt too, so nobody types a password for a typo.
            if !Users::load(path)?.contains(name) {
                bail!("{}: no user `{name}`", path.display());
            }
            let password = read_password(name)?;
            update(path, |users| {
                if !users.contains(name) {
                    bail!("{}: no user `{name}`", path.display());
                }
                users
                    .set_password(name, &password)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
            })?;
            eprintln!("{}: password of `{name}` changed", path.display());
        }
        UserAction::Remove { name } => {
            update(path, |users| {
                if !users.remove(name) {
                    bail!("{}: no user `{name}`", path.display());
                }
                Ok(())
            })?;
            eprintln!("{}: removed user `{name}`", path.display());
        }
    }
    Ok(())
}

/// Reads the users file, applies `change` and writes the result back atomically, holding an
/// exclusive lock throughout so that concurrent changes (two `user add`s, or a server creating
/// its first user) cannot overwrite each other. Nothing is written if `change` fails.
///
/// The lock is on a sidecar file (`<users file>.lock`), not the users file itself: the users
/// file is replaced by a rename on every write, and a lock on the old inode would not stop a
/// writer that opened the new one.
pub fn update<T>(
    path: &Path,
    change: impl FnOnce(&mut Users) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let _lock = lock(path)?;
    let mut users = Users::load(path)?;
    let out = change(&mut users)?;
    users.save(path)?;
    Ok(out)
}

/// The users file's lock, held until the returned file is dropped (closing it unlocks).
fn lock(path: &Path) -> anyhow::Result<File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut options = OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    file.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    Ok(file)
}

fn read_password(name: &str) -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("password for {name}: "))?;
        let second = rpassword::prompt_password("again: ")?;
        if first != second {
            bail!("passwords do not match");
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        bail!("no password on stdin");
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_updates_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        std::thread::scope(|s| {
            for i in 0..4 {
                let path = &path;
                s.spawn(move || {
                    update(path, |u| {
                        u.set_password(&format!("user{i}"), "pw")
                            .map_err(anyhow::Error::msg)
                    })
                    .unwrap()
                });
            }
        });
        let users = Users::load(&path).unwrap();
        assert_eq!(users.names().count(), 4);
        assert!(dir.path().join("users.json.lock").exists());
    }

    #[test]
    fn a_failed_change_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        update(&path, |u| {
            u.set_password("a", "pw").map_err(anyhow::Error::msg)
        })
        .unwrap();
        let before = std::fs::read(&path).unwrap();
        let e = update(&path, |u| -> anyhow::Result<()> {
            u.remove("a");
            bail!("nope")
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "nope");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }
}
