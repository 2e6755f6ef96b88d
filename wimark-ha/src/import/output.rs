//! The config being written by the import: its lines, the notes on what was
//! not carried over, and TOML quoting. Shared by convert.rs (keepalived's
//! keywords) and from_env.rs (the vendor's .env), which must not import each
//! other's helpers.

use super::Statement;

/// A TOML string literal.
pub(super) fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// The output being written: config lines and the comments beside them.
pub(super) struct Output {
    pub(super) text: String,
    /// `# not carried over` notes of the current section, written after it.
    pub(super) notes: Vec<String>,
}

impl Output {
    pub(super) fn line(&mut self, line: impl AsRef<str>) {
        self.text.push_str(line.as_ref());
        self.text.push('\n');
    }

    pub(super) fn not_carried(&mut self, statement: &Statement, why: &str) {
        self.notes.push(format!(
            "# not carried over (line {}): `{}` — {why}",
            statement.line,
            statement.text()
        ));
    }

    pub(super) fn flush_notes(&mut self) {
        for note in std::mem::take(&mut self.notes) {
            self.line(note);
        }
    }
}
