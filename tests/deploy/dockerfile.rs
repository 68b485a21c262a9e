//! The Dockerfile read as Docker would: stages, their instructions, ENV, COPY and HEALTHCHECK.

use std::collections::BTreeMap;

use crate::helpers::read;

/// One Dockerfile instruction, continuation lines joined and comments dropped.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

/// A build stage: its base image (global ARGs substituted) and its instructions.
#[derive(Debug)]
pub struct Stage {
    pub from: String,
    pub name: Option<String>,
    body: Vec<Instruction>,
}

impl Stage {
    pub fn all(&self, keyword: &str) -> impl Iterator<Item = &str> + '_ {
        let keyword = keyword.to_string();
        self.body
            .iter()
            .filter(move |i| i.keyword == keyword)
            .map(|i| i.args.as_str())
    }

    pub fn one(&self, keyword: &str) -> &str {
        let all: Vec<_> = self.all(keyword).collect();
        assert_eq!(
            all.len(),
            1,
            "expected one {keyword} in stage {:?}",
            self.name
        );
        all[0]
    }
}

pub fn dockerfile() -> Vec<Stage> {
    let text = read("Dockerfile");
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            logical.push(std::mem::take(&mut current));
        }
    }
    assert!(current.is_empty(), "Dockerfile ends inside a continuation");

    let mut global_args = BTreeMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let keyword = keyword.to_ascii_uppercase();
        let args = args.trim().to_string();
        if keyword == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            let from = substitute(words[0], &global_args);
            let name = match words.as_slice() {
                [_, kw, name] if kw.eq_ignore_ascii_case("as") => Some(name.to_string()),
                _ => None,
            };
            stages.push(Stage {
                from,
                name,
                body: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.body.push(Instruction { keyword, args });
        } else if keyword == "ARG" {
            let (k, v) = args.split_once('=').unwrap_or((&args, ""));
            global_args.insert(k.to_string(), v.to_string());
        }
    }
    assert!(stages.len() >= 2, "the Dockerfile should be multi-stage");
    stages
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

/// The stage that becomes the image.
pub fn runtime_stage(stages: &[Stage]) -> &Stage {
    stages.last().unwrap()
}

/// `KEY=VALUE …` (or the legacy `KEY VALUE`) of ENV instructions, double quotes removed.
pub fn env_of(stage: &Stage) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for args in stage.all("ENV") {
        let words = shell_words(args);
        if !words[0].contains('=') {
            env.insert(words[0].clone(), words[1..].join(" "));
            continue;
        }
        for w in words {
            let (k, v) = w.split_once('=').unwrap();
            env.insert(k.to_string(), v.to_string());
        }
    }
    env
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

/// A COPY instruction: its `--from` stage, if any, sources and destination.
pub struct Copy {
    pub from: Option<String>,
    pub sources: Vec<String>,
    pub dest: String,
}

pub fn copies(stage: &Stage) -> Vec<Copy> {
    stage
        .all("COPY")
        .map(|args| {
            assert!(
                !args.starts_with('['),
                "COPY in JSON form is not handled: {args}"
            );
            let words = shell_words(args);
            let from = words
                .iter()
                .find_map(|w| w.strip_prefix("--from="))
                .map(str::to_string);
            let mut paths: Vec<String> =
                words.into_iter().filter(|w| !w.starts_with("--")).collect();
            let dest = paths.pop().expect("COPY without destination");
            Copy {
                from,
                sources: paths,
                dest,
            }
        })
        .collect()
}

/// The HEALTHCHECK command, which must use the exec (JSON array) form.
pub fn healthcheck_command(stage: &Stage) -> Vec<String> {
    let args = stage.one("HEALTHCHECK");
    let (_, cmd) = args
        .split_once("CMD ")
        .unwrap_or_else(|| panic!("HEALTHCHECK without CMD: {args}"));
    serde_json::from_str(cmd.trim())
        .unwrap_or_else(|e| panic!("HEALTHCHECK CMD is not a JSON array ({e}): {cmd}"))
}
