//! The Dockerfile as `parse-dockerfile` reads it: each stage's base image, name, ENV, COPY and
//! the other instructions the tests check.

use std::collections::BTreeMap;

use parse_dockerfile::{Command, HealthcheckArguments, Instruction, JsonOrStringArray, Source};

use crate::helpers::read;

/// A build stage.
#[derive(Default)]
pub struct Stage {
    /// The base image, global ARGs substituted.
    pub from: String,
    pub name: Option<String>,
    pub env: BTreeMap<String, String>,
    pub copies: Vec<Copy>,
    pub users: Vec<String>,
    pub volumes: Vec<String>,
    pub exposed: Vec<String>,
    /// Each RUN's shell text.
    pub runs: Vec<String>,
    /// Each HEALTHCHECK's command in exec form, `None` in shell form or for `NONE`.
    healthchecks: Vec<Option<Vec<String>>>,
}

impl Stage {
    /// The one HEALTHCHECK's command, in the exec (JSON array) form the tests can run as it is.
    pub fn healthcheck(&self) -> &[String] {
        match self.healthchecks.as_slice() {
            [Some(exec)] => exec,
            other => panic!("expected one HEALTHCHECK CMD in exec form: {other:?}"),
        }
    }
}

/// A COPY instruction: its `--from` stage, if any, sources and destination.
pub struct Copy {
    pub from: Option<String>,
    pub sources: Vec<String>,
    pub dest: String,
}

pub fn dockerfile() -> Vec<Stage> {
    let text = read("Dockerfile");
    let file = parse_dockerfile::parse(&text).unwrap_or_else(|e| panic!("Dockerfile: {e}"));
    let args: BTreeMap<String, String> = file
        .global_args()
        .map(|a| {
            let (k, v) = a
                .arguments
                .value
                .split_once('=')
                .unwrap_or((&a.arguments.value, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    let stages: Vec<Stage> = file
        .stages()
        .map(|s| {
            let mut stage = Stage {
                from: substitute(&s.from.image.value, &args),
                name: s.from.as_.as_ref().map(|(_, n)| n.value.to_string()),
                ..Stage::default()
            };
            for i in s.instructions {
                add(&mut stage, i);
            }
            stage
        })
        .collect();
    assert!(stages.len() >= 2, "the Dockerfile should be multi-stage");
    stages
}

fn add(stage: &mut Stage, instruction: &Instruction) {
    match instruction {
        Instruction::Env(env) => stage.env.extend(env_pairs(&env.arguments.value)),
        Instruction::Copy(copy) => stage.copies.push(Copy {
            from: copy
                .options
                .iter()
                .find(|f| f.name.value == "from")
                .and_then(|f| f.value.as_ref())
                .map(|v| v.value.to_string()),
            sources: copy
                .src
                .iter()
                .map(|s| match s {
                    Source::Path(p) => p.value.to_string(),
                    other => panic!("COPY from a here-document is not handled: {other:?}"),
                })
                .collect(),
            dest: copy.dest.value.to_string(),
        }),
        Instruction::User(user) => stage.users.push(user.arguments.value.to_string()),
        Instruction::Volume(volume) => {
            let paths = match &volume.arguments {
                JsonOrStringArray::Json(a) => &a.value[..],
                JsonOrStringArray::String(a) => &a[..],
            };
            stage
                .volumes
                .extend(paths.iter().map(|v| v.value.to_string()));
        }
        Instruction::Expose(expose) => stage
            .exposed
            .extend(expose.arguments.iter().map(|p| p.value.to_string())),
        Instruction::Run(run) => stage.runs.push(match &run.arguments {
            Command::Shell(shell) => shell.value.to_string(),
            Command::Exec(exec) => {
                let words: Vec<&str> = exec.value.iter().map(|a| a.value.as_ref()).collect();
                words.join(" ")
            }
            other => panic!("RUN of an unknown form: {other:?}"),
        }),
        Instruction::Healthcheck(check) => stage.healthchecks.push(match &check.arguments {
            HealthcheckArguments::Cmd {
                arguments: Command::Exec(exec),
                ..
            } => Some(exec.value.iter().map(|a| a.value.to_string()).collect()),
            _ => None,
        }),
        _ => {}
    }
}

/// `${NAME}` and `$NAME` from `vars`.
fn substitute(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in vars {
        out = out
            .replace(&format!("${{{k}}}"), v)
            .replace(&format!("${k}"), v);
    }
    out
}

/// `KEY=VALUE …` of an ENV instruction, double quotes removed.
fn env_pairs(args: &str) -> Vec<(String, String)> {
    shell_words(args)
        .iter()
        .map(|w| {
            let (k, v) = w
                .split_once('=')
                .unwrap_or_else(|| panic!("ENV {args}: the legacy `ENV KEY value` form"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Splits on whitespace outside double quotes, dropping the quotes.
fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// The stage that becomes the image.
pub fn runtime_stage(stages: &[Stage]) -> &Stage {
    stages.last().unwrap()
}
