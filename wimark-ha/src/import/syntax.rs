//! keepalived's config syntax: statements of words, `{ … }` blocks,
//! comments, quoted strings — each statement with its line.

use super::*;

/// A keepalived config file that cannot be read as one.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ImportError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

/// One keepalived statement: `keyword args…`, with a `{ … }` block or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub line: usize,
    pub words: Vec<String>,
    pub block: Option<Vec<Statement>>,
}

impl Statement {
    pub(super) fn keyword(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }

    pub(super) fn arg(&self, index: usize) -> Option<&str> {
        self.words.get(index + 1).map(String::as_str)
    }

    pub(super) fn children(&self) -> &[Statement] {
        self.block.as_deref().unwrap_or(&[])
    }

    /// The statement as written, for "not carried over" comments.
    pub(super) fn text(&self) -> String {
        let mut text = self.words.join(" ");
        if self.block.is_some() {
            text.push_str(" { … }");
        }
        text
    }
}

/// keepalived's syntax: statements end at the end of a line, `{` opens a
/// block and `}` closes it (also on the same line), `#` and `!` start
/// comments, double quotes group words.
pub fn parse_keepalived(text: &str, file: &Path) -> Result<Vec<Statement>, ImportError> {
    let error = |line, message: &str| ImportError {
        file: file.to_path_buf(),
        line,
        message: message.to_string(),
    };
    // The open blocks, innermost last; the bottom one is the file itself.
    let mut stack: Vec<(Option<Statement>, Vec<Statement>)> = vec![(None, Vec::new())];
    // keepalived's `$NAME=value` definitions, expanded where `$NAME` or
    // `${NAME}` is used later.
    let mut definitions: BTreeMap<String, String> = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if let Some((name, value)) = definition(line) {
            definitions.insert(name, value);
            continue;
        }
        let expanded = expand(line, &definitions).map_err(|m| error(number, &m))?;
        let line = expanded.as_str();
        let mut current: Vec<String> = Vec::new();
        let flush = |current: &mut Vec<String>,
                     stack: &mut Vec<(Option<Statement>, Vec<Statement>)>| {
            if !current.is_empty() {
                let words = std::mem::take(current);
                if let Some((_, statements)) = stack.last_mut() {
                    statements.push(Statement {
                        line: number,
                        words,
                        block: None,
                    });
                }
            }
        };
        for token in tokenize(line).map_err(|m| error(number, &m))? {
            match token.as_str() {
                "{" => {
                    let mut owner = Statement {
                        line: number,
                        words: std::mem::take(&mut current),
                        block: None,
                    };
                    // `vrrp_instance X` and its `{` on the next line, as
                    // keepalived accepts: the block is the last statement's.
                    if owner.words.is_empty() {
                        let statements = &mut stack.last_mut().expect("the bottom stays").1;
                        match statements.pop() {
                            Some(last) if last.block.is_none() => owner = last,
                            _ => return Err(error(number, "a `{` with no keyword before it")),
                        }
                    }
                    stack.push((Some(owner), Vec::new()));
                }
                "}" => {
                    flush(&mut current, &mut stack);
                    if stack.len() == 1 {
                        return Err(error(number, "`}` without a matching `{`"));
                    }
                    let (parent, children) = stack.pop().expect("checked above");
                    let mut parent = parent.expect("only the bottom has no parent");
                    parent.block = Some(children);
                    stack.last_mut().expect("the bottom stays").1.push(parent);
                }
                _ => current.push(token),
            }
        }
        flush(&mut current, &mut stack);
    }
    if stack.len() > 1 {
        let open = stack
            .last()
            .and_then(|(p, _)| p.as_ref())
            .map_or(0, |p| p.line);
        return Err(error(open, "this `{` is never closed"));
    }
    Ok(stack.pop().map(|(_, s)| s).unwrap_or_default())
}

/// `$NAME=value` at the start of a line (keepalived's definition).
fn definition(line: &str) -> Option<(String, String)> {
    let rest = line.trim_start().strip_prefix('$')?;
    let (name, value) = rest.split_once('=')?;
    is_name(name).then(|| (name.to_string(), value.trim().to_string()))
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `$NAME` and `${NAME}` replaced by their definitions (comments left as
/// they are); one that is not defined is an error, not a literal `$IFACE`
/// that check-config would take for an interface name.
fn expand(line: &str, definitions: &BTreeMap<String, String>) -> Result<String, String> {
    let code_end = comment_start(line).unwrap_or(line.len());
    let (code, comment) = line.split_at(code_end);
    if !code.contains('$') {
        return Ok(line.to_string());
    }
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, used) = match after.strip_prefix('{') {
            Some(braced) => match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => return Err("`${` is not closed".to_string()),
            },
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        if !is_name(name) {
            // A lone `$` (in a password, say) is kept as written.
            out.push('$');
            rest = after;
            continue;
        }
        match definitions.get(name) {
            Some(value) => out.push_str(value),
            None => {
                return Err(format!(
                    "`${name}` is not defined (keepalived defines it with `${name}=value` on a line before)"
                ))
            }
        }
        rest = &after[used..];
    }
    out.push_str(rest);
    out.push_str(comment);
    Ok(out)
}

/// Where a comment starts — the one rule for [`tokenize`], `$NAME`
/// expansion and decoding: `#` anywhere outside double quotes, `!` where a
/// word would start.
fn comment_start(line: &str) -> Option<usize> {
    let mut quoted = false;
    let mut word_start = true;
    for (at, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return Some(at),
            '!' if !quoted && word_start => return Some(at),
            _ => {}
        }
        word_start = !quoted && (c.is_whitespace() || matches!(c, '{' | '}' | '"'));
    }
    None
}

/// The file's text: comments may hold any bytes (a Latin-1 note is common),
/// but what keepalived reads must be UTF-8 — else the line is named.
pub fn decode_keepalived(bytes: &[u8], file: &Path) -> Result<String, ImportError> {
    let mut text = String::with_capacity(bytes.len());
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if index > 0 {
            text.push('\n');
        }
        match std::str::from_utf8(line) {
            Ok(line) => text.push_str(line),
            Err(e) => {
                // Valid up to the first bad byte: is that byte in a comment?
                let valid = std::str::from_utf8(&line[..e.valid_up_to()]).unwrap_or_default();
                match comment_start(valid) {
                    Some(at) => text.push_str(&valid[..at]),
                    None => {
                        return Err(ImportError {
                            file: file.to_path_buf(),
                            line: index + 1,
                            message: format!(
                                "byte {} is not UTF-8 outside a comment (save the file as UTF-8)",
                                e.valid_up_to() + 1
                            ),
                        })
                    }
                }
            }
        }
    }
    Ok(text)
}

fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let line = &line[..comment_start(line).unwrap_or(line.len())];
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '{' | '}' => {
                tokens.push(c.to_string());
                chars.next();
            }
            '"' => {
                chars.next();
                let mut word = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some(c) => word.push(c),
                        None => return Err("a quoted string is not closed".to_string()),
                    }
                }
                tokens.push(word);
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == '{' || c == '}' {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(word);
            }
        }
    }
    Ok(tokens)
}
