//! One function per fuzz target, each taking the raw fuzzer input. Shared by the libFuzzer
//! binaries in `fuzz/fuzz_targets/` and by `tests/fuzz_corpus.rs`, which replays the committed
//! corpus through the same functions on every `make test`.
//!
//! Besides "never panic", each target asserts what must hold whenever the code under test
//! says yes, so a wrong acceptance is a crash too.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use mnist_api::auth::{Secret, Tokens, Users};
use mnist_api::data::IMAGE_PIXELS;
use mnist_api::preprocess::{self, ImageLimits};
use mnist_api::upload::{self, BodyLimits};
use mnist_api::weights;

/// Smaller than the server's defaults (4096 px, 128 MiB) so one input cannot take seconds and
/// stall the search; the limit checks themselves are the same code either way.
const IMAGE_LIMITS: ImageLimits = ImageLimits {
    max_side: 1024,
    max_memory: 32 * 1024 * 1024,
};

/// `mnist_api::preprocess::prepare`: any bytes as an uploaded image.
pub fn preprocess(data: &[u8]) {
    if let Ok(p) = preprocess::prepare(data, IMAGE_LIMITS) {
        assert_eq!(p.input.len(), IMAGE_PIXELS);
        assert!(
            p.input.iter().all(|v| v.is_finite()),
            "non-finite network input"
        );
        assert!(p.width > 0 && p.height > 0);
        assert!(p.width <= IMAGE_LIMITS.max_side && p.height <= IMAGE_LIMITS.max_side);
    }
}

/// Body limit of the multipart target; small so the fuzzer reaches it.
const MULTIPART_MAX_BODY: u64 = 64 * 1024;
/// `file` parts kept at most, as `--max-files` does.
const MULTIPART_MAX_FILES: usize = 4;

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime needs no resources");
}

/// The multipart reader of `POST /predict` (`upload::read_files`):
/// byte 0 sets the size of the body's network chunks (1–256), then the `Content-Type` value up
/// to the first `\n`, then the body.
pub fn multipart(data: &[u8]) {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk) + 1;
    let (content_type, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let content_type = String::from_utf8_lossy(content_type);
    let chunks: Vec<Result<Bytes, std::io::Error>> = body
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let stream = futures_util::stream::iter(chunks);
    let limits = BodyLimits::standalone(MULTIPART_MAX_BODY, std::time::Duration::from_secs(5));
    let read = RUNTIME.with(|rt| {
        rt.block_on(upload::read_files(
            Some(&content_type),
            None,
            stream,
            &limits,
            MULTIPART_MAX_FILES,
        ))
    });
    if let Ok((files, charge)) = read {
        assert!(files.len() <= MULTIPART_MAX_FILES, "{} files", files.len());
        let total: usize = files.iter().map(|(_, b)| b.len()).sum();
        assert!(
            total as u64 <= MULTIPART_MAX_BODY,
            "read {total} bytes past the body limit"
        );
        assert!(total <= body.len(), "files hold more bytes than the body");
        assert!(charge.bytes() <= body.len(), "charged more than was sent");
    }
    assert_eq!(
        limits.budget.available_permits() as u64,
        2 * MULTIPART_MAX_BODY,
        "bytes stayed charged after the request"
    );
}

const TOKEN_SECRET: &[u8] = b"fuzzing secret, thirty-two bytes";
const TOKEN_LEEWAY_SECS: u64 = 5;

/// `auth::Tokens::verify_header`. Byte 0 picks the mode: even, the rest is the `Authorization`
/// value as sent; odd, the rest is a JOSE header and claims (split at the first `\n`) that get
/// signed with the server's key first, so the claim checks behind the signature are reached.
pub fn token(data: &[u8]) {
    let tokens = Tokens::new(&Secret::new(TOKEN_SECRET.to_vec()), 3600);
    let Some((&mode, rest)) = data.split_first() else {
        assert!(tokens.verify_header(None).is_err());
        return;
    };
    let value = if mode % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let (header, claims) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let key = jsonwebtoken::EncodingKey::from_secret(TOKEN_SECRET);
        let Ok(signature) =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
        else {
            return;
        };
        format!("Bearer {message}.{signature}")
    };
    if let Ok(claims) = tokens.verify_header(Some(&value)) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        assert!(
            claims.exp.saturating_add(TOKEN_LEEWAY_SECS) >= now,
            "expired token accepted: {claims:?}"
        );
    }
}

thread_local! {
    static USERS_DIR: tempfile::TempDir = tempfile::tempdir().expect("a temporary directory");
}

/// `auth::Users::load` on a file holding the input; whatever loads must survive a save and
/// load unchanged.
pub fn users(data: &[u8]) {
    USERS_DIR.with(|dir| {
        let path = dir.path().join("users.json");
        std::fs::write(&path, data).expect("writing the temporary users file");
        if let Ok(users) = Users::load(&path) {
            let copy = dir.path().join("copy.json");
            users.save(&copy).expect("saving what was just loaded");
            let again = Users::load(&copy).expect("loading what was just saved");
            assert_eq!(users, again, "users file changed in a save/load round trip");
        }
    });
}

/// `weights::from_bytes`: any bytes as a weights file.
pub fn weights(data: &[u8]) {
    if let Ok(loaded) = weights::from_bytes(
        Path::new("fuzz.safetensors"),
        data,
        &candle_core::Device::Cpu,
    ) {
        assert_eq!(loaded.metadata.format_version, weights::FORMAT_VERSION);
    }
}
