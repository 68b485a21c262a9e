//! The command-line tools: users subcommand and the trainer's error messages.

mod common;

use std::process::Output;

use common::{output_text, run, weights_path, Server, MNIST_API, TRAIN};

fn api(args: &[&str], stdin: &str) -> Output {
    run(MNIST_API, args, stdin)
}

#[test]
fn users_are_added_listed_changed_and_removed_with_passwords_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let u = users.to_str().unwrap();
    let o = api(&["--users", u, "user", "add", "bob"], "s3cret-pw\n");
    assert!(o.status.success(), "{}", output_text(&o));
    let stored = std::fs::read_to_string(&users).unwrap();
    assert!(stored.contains("$argon2id$") && !stored.contains("s3cret-pw"));
    let listed = api(&["--users", u, "user", "list"], "");
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "bob\n");
    let o = api(&["--users", u, "user", "passwd", "bob"], "another-pw\n");
    assert!(o.status.success(), "{}", output_text(&o));
    assert_ne!(std::fs::read_to_string(&users).unwrap(), stored);
    let o = api(&["--users", u, "user", "remove", "bob"], "");
    assert!(o.status.success(), "{}", output_text(&o));
    let listed = api(&["--users", u, "user", "list"], "");
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "");
}

#[test]
fn users_flag_may_follow_the_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let u = users.to_str().unwrap();
    let o = api(&["user", "add", "carol", "--users", u], "pw-for-carol\n");
    assert!(o.status.success(), "{}", output_text(&o));
    let listed = api(&["user", "list", "--users", u], "");
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "carol\n");
}

#[test]
fn user_errors_name_the_file_and_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let u = users.to_str().unwrap();
    let o = api(&["--users", u, "user", "remove", "ghost"], "");
    assert!(!o.status.success());
    assert!(
        output_text(&o).contains(&format!("{u}: no user `ghost`")),
        "{}",
        output_text(&o)
    );
    let o = api(&["--users", u, "user", "add", "bob"], "");
    assert!(!o.status.success());
    assert!(
        output_text(&o).contains("no password on stdin"),
        "{}",
        output_text(&o)
    );
    std::fs::write(&users, "{broken").unwrap();
    let o = api(&["--users", u, "user", "list"], "");
    assert!(!o.status.success());
    assert!(
        output_text(&o).contains(&format!("{u}: invalid users file")),
        "{}",
        output_text(&o)
    );
    // A broken users file also stops the server before it listens.
    let out = Server::builder().users_file(&users).start_fails();
    assert!(out.contains(&format!("{u}: invalid users file")), "{out}");
}

#[test]
fn trainer_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.safetensors");
    let o = run(TRAIN, &["--eval", missing.to_str().unwrap()], "");
    assert!(!o.status.success());
    assert!(
        output_text(&o).contains(missing.to_str().unwrap()),
        "{}",
        output_text(&o)
    );

    let o = run(
        TRAIN,
        &["--robustness", "--eval", missing.to_str().unwrap()],
        "",
    );
    assert!(!o.status.success());
    assert!(
        output_text(&o).contains(missing.to_str().unwrap()),
        "{}",
        output_text(&o)
    );
    let committed = weights_path();
    let o = run(
        TRAIN,
        &[
            "--robustness",
            "--eval",
            committed.to_str().unwrap(),
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        "",
    );
    assert!(!o.status.success());
    assert!(
        output_text(&o).contains(&format!(
            "{}: neither t10k-images-idx3-ubyte nor t10k-images-idx3-ubyte.gz found",
            dir.path().display()
        )),
        "{}",
        output_text(&o)
    );

    let o = run(
        TRAIN,
        &["--data-dir", dir.path().to_str().unwrap(), "--epochs", "1"],
        "",
    );
    assert!(!o.status.success());
    assert!(
        output_text(&o)
            .contains("neither train-images-idx3-ubyte nor train-images-idx3-ubyte.gz found"),
        "{}",
        output_text(&o)
    );
}

#[test]
fn parallel_user_adds_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let u = users.to_str().unwrap();
    let names: Vec<String> = (0..8).map(|i| format!("user{i}")).collect();
    std::thread::scope(|s| {
        for name in &names {
            s.spawn(move || {
                let o = api(&["--users", u, "user", "add", name], "pw-of-someone\n");
                assert!(o.status.success(), "{}", output_text(&o));
            });
        }
    });
    let listed = api(&["--users", u, "user", "list"], "");
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let mut want = names.join("\n");
    want.push('\n');
    assert_eq!(listed, want, "every add must survive the others");
}
