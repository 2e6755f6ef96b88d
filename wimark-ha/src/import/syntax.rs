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
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
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
                    let words = std::mem::take(&mut current);
                    stack.push((
                        Some(Statement {
                            line: number,
                            words,
                            block: None,
                        }),
                        Vec::new(),
                    ));
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

fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            '#' | '!' => break,
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
                    if c.is_whitespace() || c == '{' || c == '}' || c == '#' {
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
