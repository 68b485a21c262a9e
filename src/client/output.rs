//! What the user sees: one line per file on stdout (text or JSON lines); errors, notes and
//! the trace on stderr, with a progress bar there for large sets when it is a terminal.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use opentelemetry::trace::TraceId;
use serde::Serialize;

use super::http::Answer;
use super::ClientError;

/// Sets with more files than this get a progress bar.
const PROGRESS_ABOVE: usize = 64;

/// The run's output.
pub struct Output {
    json: bool,
}

impl Output {
    /// Text lines, or JSON lines if `json`.
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    /// The per-file lines of a run of `files` files, with a progress bar if they are many.
    pub fn progress(&self, files: usize) -> Lines<'_> {
        let bar = (files > PROGRESS_ABOVE && std::io::stderr().is_terminal()).then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(files as u64), ProgressDrawTarget::stderr());
            if let Ok(style) =
                ProgressStyle::with_template("{bar:40} {pos}/{len} images {elapsed} (eta {eta})")
            {
                bar.set_style(style);
            }
            bar
        });
        Lines { output: self, bar }
    }

    /// A remark that does not fail the run.
    pub fn note(&self, text: &str) {
        eprintln!("note: {text}");
    }

    /// What ended the run.
    pub fn error(&self, error: &ClientError) {
        eprintln!("error: {error}");
    }

    /// The run's trace id, as a link into Jaeger's UI when its address is known.
    pub fn trace(&self, id: TraceId, jaeger_ui: Option<&str>) {
        match jaeger_ui.filter(|u| !u.is_empty()) {
            Some(ui) => eprintln!("trace: {}/trace/{id}", ui.trim_end_matches('/')),
            None => eprintln!("trace: {id}"),
        }
    }
}

/// One line per file, in input order.
pub struct Lines<'a> {
    output: &'a Output,
    bar: Option<ProgressBar>,
}

impl Lines<'_> {
    /// `path`'s answer: `path<TAB>digit<TAB>probability`, or a JSON line.
    pub fn answer(&self, path: &Path, answer: &Answer) {
        let line = if self.output.json {
            // Through a struct, not `json!`: f32s print as themselves, not widened to f64.
            #[derive(Serialize)]
            struct Line<'a> {
                file: Cow<'a, str>,
                prediction: u8,
                probability: f32,
                probabilities: &'a [f32],
            }
            serde_json::to_string(&Line {
                file: path.to_string_lossy(),
                prediction: answer.prediction,
                probability: answer.probability,
                probabilities: &answer.probabilities,
            })
            .unwrap_or_default()
        } else {
            format!(
                "{}\t{}\t{:.4}",
                path.display(),
                answer.prediction,
                answer.probability
            )
        };
        self.print(|| {
            // A closed pipe (`| head`) ends the output, not the run.
            let _ = writeln!(std::io::stdout().lock(), "{line}");
        });
    }

    /// A file without an answer: the sentence on stderr, and in JSON mode a line on stdout
    /// too, so the output keeps one line per file.
    pub fn failure(&self, path: &Path, error: &ClientError) {
        self.print(|| {
            if self.output.json {
                #[derive(Serialize)]
                struct Line<'a> {
                    file: Cow<'a, str>,
                    error: String,
                    code: Option<&'a str>,
                }
                let line = serde_json::to_string(&Line {
                    file: path.to_string_lossy(),
                    error: error.to_string(),
                    code: error.code(),
                })
                .unwrap_or_default();
                let _ = writeln!(std::io::stdout().lock(), "{line}");
            }
            self.output.error(error);
        });
    }

    fn print(&self, f: impl FnOnce()) {
        match &self.bar {
            Some(bar) => {
                bar.suspend(f);
                bar.inc(1);
            }
            None => f(),
        }
    }
}

impl Drop for Lines<'_> {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
