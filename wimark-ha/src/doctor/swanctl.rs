//! Just enough of strongSwan's settings syntax (swanctl.conf) to find each
//! connection's `mobike` and `local_addrs`: `name { … }` sections (also
//! `name : base {`), `key = value` to the end of the line, `#` comments and
//! `include` globs resolved beside the including file.
//!
//! Owns: reading those files into connections with their file and line.
//! Must not: judge them (ap_recovery does) or talk to charon.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SwanctlError {
    #[error("{file}: {reason}")]
    Read { file: PathBuf, reason: String },
    #[error("{file}:{line}: {reason}")]
    Syntax {
        file: PathBuf,
        line: usize,
        reason: &'static str,
    },
    #[error("{file}: includes nest deeper than {MAX_INCLUDE_DEPTH} (an include loop?)")]
    IncludeDepth { file: PathBuf },
}

const MAX_INCLUDE_DEPTH: usize = 8;

/// One `connections { NAME { … } }` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub name: String,
    pub file: PathBuf,
    pub line: usize,
    /// `mobike = …` as written, if it is.
    pub mobike: Option<String>,
    /// `local_addrs = …`, split on commas; empty when not set (any address).
    pub local_addrs: Vec<String>,
}

impl Connection {
    /// strongSwan's default is `mobike = yes`.
    pub fn mobike_on(&self) -> bool {
        !matches!(
            self.mobike
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("no" | "false" | "0")
        )
    }
}

/// The connections of `file` and of everything it includes.
pub fn connections(file: &Path) -> Result<Vec<Connection>, SwanctlError> {
    let mut parser = Parser::default();
    parser.read(file, 0)?;
    Ok(parser.connections)
}

#[derive(Default)]
struct Parser {
    /// Open sections, outermost first: (name, where the connection started).
    stack: Vec<String>,
    connections: Vec<Connection>,
}

impl Parser {
    fn read(&mut self, file: &Path, depth: usize) -> Result<(), SwanctlError> {
        if depth > MAX_INCLUDE_DEPTH {
            return Err(SwanctlError::IncludeDepth {
                file: file.to_owned(),
            });
        }
        let text = std::fs::read_to_string(file).map_err(|e| SwanctlError::Read {
            file: file.to_owned(),
            reason: e.to_string(),
        })?;
        let opened_at = self.stack.len();
        // A section name on a line of its own, waiting for its `{`.
        let mut pending: Option<(String, usize)> = None;
        for (index, raw_line) in text.lines().enumerate() {
            let line_no = index + 1;
            let syntax = |reason| SwanctlError::Syntax {
                file: file.to_owned(),
                line: line_no,
                reason,
            };
            let mut rest = strip_comment(raw_line).trim();
            while !rest.is_empty() {
                if let Some(after) = rest.strip_prefix('}') {
                    if self.stack.len() <= opened_at {
                        return Err(syntax("`}` closes no section"));
                    }
                    self.stack.pop();
                    rest = after.trim_start();
                    continue;
                }
                if let Some(after) = rest.strip_prefix('{') {
                    let (name, line) = pending
                        .take()
                        .ok_or_else(|| syntax("`{` without a section name"))?;
                    self.open(name, file, line);
                    rest = after.trim_start();
                    continue;
                }
                if pending.is_some() {
                    return Err(syntax("a section name must be followed by `{`"));
                }
                if let Some(path) = rest.strip_prefix("include ") {
                    self.include(file, path.trim(), depth, line_no)?;
                    break;
                }
                let word_end = rest
                    .find(|c: char| c == '=' || c == '{' || c == '}' || c.is_whitespace())
                    .unwrap_or(rest.len());
                let word = &rest[..word_end];
                let after = rest[word_end..].trim_start();
                if let Some(value) = after.strip_prefix('=') {
                    let (value, after) = take_value(value.trim_start());
                    self.key(word, value);
                    rest = after;
                } else if let Some(inheritance) = after.strip_prefix(':') {
                    // `name : base1, base2 {`: the bases do not matter here.
                    let brace = inheritance.find('{');
                    match brace {
                        Some(at) => {
                            self.open(word.to_owned(), file, line_no);
                            rest = inheritance[at + 1..].trim_start();
                        }
                        None => {
                            pending = Some((word.to_owned(), line_no));
                            break;
                        }
                    }
                } else if after.is_empty() || after.starts_with('{') {
                    // `name {`, or `name` with its `{` on a later line.
                    pending = Some((word.to_owned(), line_no));
                    rest = after;
                } else {
                    return Err(syntax("expected `key = value` or `name {`"));
                }
            }
        }
        if pending.is_some() {
            return Err(SwanctlError::Syntax {
                file: file.to_owned(),
                line: text.lines().count(),
                reason: "a section name at the end of the file",
            });
        }
        if self.stack.len() != opened_at {
            return Err(SwanctlError::Syntax {
                file: file.to_owned(),
                line: text.lines().count(),
                reason: "a section is not closed (missing `}`)",
            });
        }
        Ok(())
    }

    fn open(&mut self, name: String, file: &Path, line: usize) {
        if self.stack.len() == 1 && self.stack[0] == "connections" {
            self.connections.push(Connection {
                name: name.clone(),
                file: file.to_owned(),
                line,
                mobike: None,
                local_addrs: Vec::new(),
            });
        }
        self.stack.push(name);
    }

    fn key(&mut self, key: &str, value: &str) {
        // Only keys directly in `connections.NAME` (not in its children).
        if self.stack.len() != 2 || self.stack[0] != "connections" {
            return;
        }
        let Some(connection) = self.connections.last_mut() else {
            return;
        };
        match key {
            "mobike" => connection.mobike = Some(value.to_owned()),
            "local_addrs" => {
                connection.local_addrs = value
                    .split(',')
                    .map(|a| a.trim().to_owned())
                    .filter(|a| !a.is_empty())
                    .collect()
            }
            _ => {}
        }
    }

    fn include(
        &mut self,
        file: &Path,
        pattern: &str,
        depth: usize,
        line: usize,
    ) -> Result<(), SwanctlError> {
        let pattern = pattern.trim_matches('"');
        let full = if pattern.starts_with('/') {
            PathBuf::from(pattern)
        } else {
            file.parent().unwrap_or(Path::new("/")).join(pattern)
        };
        let matches = glob::glob(&full.to_string_lossy()).map_err(|_| SwanctlError::Syntax {
            file: file.to_owned(),
            line,
            reason: "an include pattern that is not a valid glob",
        })?;
        let mut paths: Vec<PathBuf> = matches.filter_map(Result::ok).collect();
        paths.sort();
        for path in paths {
            self.read(&path, depth + 1)?;
        }
        Ok(())
    }
}

fn strip_comment(line: &str) -> &str {
    // `#` inside a quoted value is not a comment.
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

/// A value and what follows it on the line (a closing `}` may share it).
fn take_value(text: &str) -> (&str, &str) {
    if let Some(quoted) = text.strip_prefix('"') {
        if let Some(end) = quoted.find('"') {
            return (&quoted[..end], quoted[end + 1..].trim_start());
        }
    }
    match text.find('}') {
        Some(end) => (text[..end].trim_end(), &text[end..]),
        None => (text.trim_end(), ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("wimark-ha-swanctl-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("conf.d")).expect("scratch");
        dir
    }

    #[test]
    fn reads_connections_with_their_lines_and_includes() {
        let dir = scratch("includes");
        std::fs::write(
            dir.join("swanctl.conf"),
            "# the servers' IKE daemon\nconnections {\n  ap : base {\n    local_addrs = 10.10.10.3, 10.10.10.4 # the VIP\n    mobike = no\n    children {\n      tunnel { mobike = yes }\n    }\n  }\n  mgmt\n  {\n    remote_addrs = 192.0.2.1\n  }\n}\ninclude conf.d/*.conf\n",
        )
        .expect("write");
        std::fs::write(
            dir.join("conf.d/extra.conf"),
            "connections { extra { local_addrs = \"%any\" } }\n",
        )
        .expect("write");
        let found = connections(&dir.join("swanctl.conf")).expect("parses");
        let names: Vec<_> = found.iter().map(|c| (c.name.as_str(), c.line)).collect();
        assert_eq!(names, [("ap", 3), ("mgmt", 10), ("extra", 1)]);
        assert_eq!(found[0].local_addrs, ["10.10.10.3", "10.10.10.4"]);
        assert!(
            !found[0].mobike_on(),
            "the child's mobike key is not the connection's"
        );
        assert!(found[1].mobike_on(), "strongSwan's default");
        assert!(found[1].local_addrs.is_empty());
        assert_eq!(found[2].local_addrs, ["%any"]);
        assert!(found[2].file.ends_with("conf.d/extra.conf"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn broken_files_name_the_line() {
        let dir = scratch("broken");
        let file = dir.join("swanctl.conf");
        std::fs::write(&file, "connections {\n  ap {\n    mobike no\n  }\n}\n").expect("write");
        assert_eq!(
            connections(&file),
            Err(SwanctlError::Syntax {
                file: file.clone(),
                line: 3,
                reason: "expected `key = value` or `name {`"
            })
        );
        std::fs::write(&file, "connections {\n  ap {\n").expect("write");
        let error = connections(&file).expect_err("unclosed");
        assert!(error.to_string().contains("not closed"), "{error}");
        std::fs::write(&file, "include swanctl.conf\n").expect("write");
        assert!(matches!(
            connections(&file),
            Err(SwanctlError::IncludeDepth { .. })
        ));
        let missing = dir.join("absent.conf");
        assert!(connections(&missing)
            .expect_err("missing")
            .to_string()
            .contains("absent.conf"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
