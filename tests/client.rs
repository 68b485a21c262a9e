//! `mnist-api predict`, the command-line client, against the real server: inputs, output,
//! and each way a run can fail, with its exit code and a sentence naming the file.

mod common;

use std::path::{Path, PathBuf};

use common::{digit, png, predict_as_user, predict_command, shown, ClientRun, Server, PASSWORD};
use image::GrayImage;

/// `names` (fixture digits, `one`, `two`, `seven`) copied into `dir` as `{name}.png`.
fn digits_in(dir: &Path, names: &[&str]) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    names
        .iter()
        .map(|n| {
            let path = dir.join(format!("{n}.png"));
            std::fs::write(&path, digit(n)).unwrap();
            path
        })
        .collect()
}

#[test]
fn files_directories_and_patterns_are_answered_in_input_order() {
    // Two images per request, so the seven files take four requests, in flight together.
    let server = Server::builder().args(["--max-files", "2"]).start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let named = digits_in(&d.join("named"), &["seven"]);
    let walked = digits_in(&d.join("dir"), &["one", "two"]);
    let nested = digits_in(&d.join("dir/nested"), &["seven"]);
    let globbed = digits_in(&d.join("glob"), &["two", "one", "seven"]);
    let pattern = d.join("glob/*.png");
    let run = ClientRun::of(
        predict_as_user(&server.url(""))
            .arg(&named[0])
            .arg(d.join("dir"))
            .arg(&pattern),
    );
    run.assert_exit(0);
    let expected: Vec<(String, u8)> = [
        (&named[0], 7),
        // A directory's entries come sorted by name, subdirectories among the files.
        (&nested[0], 7),
        (&walked[0], 1),
        (&walked[1], 2),
        // A pattern's matches come sorted, as a shell would give them.
        (&globbed[1], 1),
        (&globbed[2], 7),
        (&globbed[0], 2),
    ]
    .into_iter()
    .map(|(p, d)| (shown(p), d))
    .collect();
    assert_eq!(run.answers(), expected, "{run:#?}");
}

#[test]
fn json_lines_carry_the_probabilities() {
    let server = Server::builder().no_auth().start();
    let dir = tempfile::tempdir().unwrap();
    let files = digits_in(dir.path(), &["two", "seven"]);
    let run = ClientRun::of(predict_command(&server.url("")).arg("--json").args(&files));
    run.assert_exit(0);
    let lines = run.json_lines();
    assert_eq!(lines.len(), 2);
    for (line, (file, digit)) in lines.iter().zip([(&files[0], 2), (&files[1], 7)]) {
        assert_eq!(line["file"], shown(file));
        assert_eq!(line["prediction"], digit);
        let probabilities = line["probabilities"].as_array().unwrap();
        assert_eq!(probabilities.len(), 10);
        assert_eq!(line["probability"], probabilities[digit as usize]);
    }
}

#[test]
fn a_token_may_replace_the_login_and_a_missing_login_is_explained() {
    let server = Server::builder().start();
    let dir = tempfile::tempdir().unwrap();
    let files = digits_in(dir.path(), &["one"]);
    let run = ClientRun::of(predict_command(&server.url("")).args(&files));
    run.assert_exit(3);
    assert!(
        run.stderr
            .contains("the server requires a login: pass --user NAME"),
        "{run:#?}"
    );
    let token = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(server.token());
    let run = ClientRun::of(
        predict_command(&server.url(""))
            .env("MNIST_API_TOKEN", token)
            .args(&files),
    );
    run.assert_exit(0);
    assert_eq!(run.answers(), [(shown(&files[0]), 1)]);
}

#[test]
fn a_server_that_is_down_is_named_with_exit_code_3() {
    // A loopback port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let files = digits_in(dir.path(), &["one"]);
    let url = format!("http://127.0.0.1:{port}");
    let run = ClientRun::of(predict_as_user(&url).args(&files));
    run.assert_exit(3);
    assert!(
        run.stderr
            .contains(&format!("cannot reach the server at {url}/model")),
        "{run:#?}"
    );
    assert!(run.stdout.is_empty());
}

#[test]
fn a_wrong_password_is_refused_with_exit_code_3() {
    let server = Server::builder().start();
    let dir = tempfile::tempdir().unwrap();
    let files = digits_in(dir.path(), &["one"]);
    let run = ClientRun::of(
        predict_as_user(&server.url(""))
            .env("MNIST_API_PASSWORD", format!("not-{PASSWORD}"))
            .args(&files),
    );
    run.assert_exit(3);
    assert!(
        run.stderr
            .contains("the server refused the login for `alice`: Bad username or password"),
        "{run:#?}"
    );
    assert!(run.stdout.is_empty());
}

#[test]
fn an_unreadable_file_is_named_and_nothing_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let files = digits_in(dir.path(), &["one"]);
    let missing = dir.path().join("missing.png");
    // No server: bad inputs stop the run before it connects.
    let run = ClientRun::of(
        predict_as_user("http://127.0.0.1:9")
            .arg(&files[0])
            .arg(&missing),
    );
    run.assert_exit(2);
    assert!(
        run.stderr.contains(&format!(
            "{}: cannot read it: No such file",
            shown(&missing)
        )),
        "{run:#?}"
    );
    assert!(run.stdout.is_empty());
}

#[test]
fn a_file_that_cannot_be_read_when_sent_fails_alone() {
    let server = Server::builder().start();
    let dir = tempfile::tempdir().unwrap();
    let mut files = digits_in(dir.path(), &["seven"]);
    // A file mode would not stop root, which CI runs as; reading a process's memory from
    // offset 0 fails for everyone (EIO), while the file itself is there to be found.
    let unreadable = dir.path().join("unreadable.png");
    std::os::unix::fs::symlink("/proc/self/mem", &unreadable).unwrap();
    files.insert(0, unreadable);
    let run = ClientRun::of(predict_as_user(&server.url("")).args(&files));
    run.assert_exit(1);
    assert!(
        run.stderr
            .contains(&format!("{}: cannot read it", shown(&files[0]))),
        "{run:#?}"
    );
    assert_eq!(run.answers(), [(shown(&files[1]), 7)]);
}

#[test]
fn a_directory_of_mixed_files_skips_non_images_and_names_broken_ones() {
    let server = Server::builder().start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("mixed");
    let files = digits_in(&d, &["one", "two"]);
    let notes = d.join("notes.txt");
    std::fs::write(&notes, "not an image").unwrap();
    let broken = d.join("broken.png");
    std::fs::write(&broken, "not a png either").unwrap();

    let run = ClientRun::of(predict_as_user(&server.url("")).arg(&d));
    // The broken image shared a request with the others; they are answered all the same.
    run.assert_exit(1);
    assert_eq!(
        run.answers(),
        [(shown(&files[0]), 1), (shown(&files[1]), 2)],
        "{run:#?}"
    );
    assert!(
        run.stderr.contains(&format!(
            "{}: not an image format the server reads (415 unsupported_format)",
            shown(&broken)
        )),
        "{run:#?}"
    );
    assert!(
        run.stderr.contains(&format!(
            "note: {}: skipped 1 file without an image extension: {}",
            shown(&d),
            shown(&notes)
        )),
        "{run:#?}"
    );
    assert!(
        run.stderr.contains("1 of 3 files got no answer"),
        "{run:#?}"
    );

    // Named on the command line, a non-image is a mistake: nothing is sent.
    let run = ClientRun::of(predict_as_user(&server.url("")).arg(&files[0]).arg(&notes));
    run.assert_exit(2);
    assert!(
        run.stderr
            .contains(&format!("{}: not an image file", shown(&notes))),
        "{run:#?}"
    );
    assert!(run.stdout.is_empty());
}

#[test]
fn an_image_over_the_servers_limit_gets_its_413_named() {
    let server = Server::builder().args(["--max-image-side", "32"]).start();
    let dir = tempfile::tempdir().unwrap();
    let files = digits_in(dir.path(), &["seven"]);
    let large = dir.path().join("large.png");
    std::fs::write(
        &large,
        png(GrayImage::from_pixel(40, 40, image::Luma([200]))),
    )
    .unwrap();
    let run = ClientRun::of(
        predict_as_user(&server.url(""))
            .arg("--json")
            .arg(&large)
            .args(&files),
    );
    run.assert_exit(1);
    let lines = run.json_lines();
    assert_eq!(lines[0]["file"], shown(&large));
    assert_eq!(lines[0]["code"], "image_too_large");
    assert_eq!(lines[1]["prediction"], 7);
    assert!(
        run.stderr.contains(&format!(
            "{}: too large for the server (413 image_too_large)",
            shown(&large)
        )),
        "{run:#?}"
    );
}

#[test]
fn a_bad_tracing_setting_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let files = digits_in(dir.path(), &["one"]);
    let run = ClientRun::of(
        predict_command("http://127.0.0.1:9")
            .env("OTEL_TRACES_EXPORTER", "zipkin")
            .args(&files),
    );
    run.assert_exit(2);
    assert!(
        run.stderr.contains("unknown traces exporter `zipkin`"),
        "{run:#?}"
    );
}
