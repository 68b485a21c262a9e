//! `mnist-api user …`: edit the users file. Passwords come from a prompt or stdin, never argv
//! (argv is visible to every user of the machine in `ps`).

use std::io::{BufRead, IsTerminal};
use std::path::Path;

use anyhow::{bail, Context};

use crate::auth::Users;
use crate::config::UserAction;

/// Applies `action` to the users file at `path`.
pub fn run(action: &UserAction, path: &Path) -> anyhow::Result<()> {
    let mut users = Users::load(path)?;
    match action {
        UserAction::List => {
            for name in users.names() {
                println!("{name}");
            }
            return Ok(());
        }
        UserAction::Add { name } => {
            let password = read_password(name)?;
            let existed = users.contains(name);
            users
                .set_password(name, &password)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            users.save(path)?;
            let verb = if existed { "updated" } else { "added" };
            eprintln!("{}: {verb} user `{name}`", path.display());
        }
        UserAction::Passwd { name } => {
            if !users.contains(name) {
                bail!("{}: no user `{name}`", path.display());
            }
            let password = read_password(name)?;
            users
                .set_password(name, &password)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            users.save(path)?;
            eprintln!("{}: password of `{name}` changed", path.display());
        }
        UserAction::Remove { name } => {
            if !users.remove(name) {
                bail!("{}: no user `{name}`", path.display());
            }
            users.save(path)?;
            eprintln!("{}: removed user `{name}`", path.display());
        }
    }
    Ok(())
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
