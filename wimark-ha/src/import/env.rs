//! The vendor's `.env` files (`/etc/wimark/{master,backup}/.env`): which
//! compose projects and paths the two stacks use.

use super::*;

/// The vendor's `/etc/wimark/{master,backup}/.env` (`KEY=value # comment`).
pub fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(" #").next().unwrap_or(line).trim();
            if line.starts_with('#') {
                return None;
            }
            let (key, value) = line.split_once('=')?;
            Some((
                key.trim().to_string(),
                value.trim().trim_matches('"').to_string(),
            ))
        })
        .collect()
}

/// What the import found beside the keepalived config.
#[derive(Debug, Default)]
pub struct VendorEnv {
    /// Where the .env files were (the compose projects' directories).
    pub dir: PathBuf,
    pub master: BTreeMap<String, String>,
    pub backup: BTreeMap<String, String>,
}

impl VendorEnv {
    pub fn read(dir: &Path) -> Result<Self, ImportError> {
        let read = |role: &str| -> Result<BTreeMap<String, String>, ImportError> {
            let path = dir.join(role).join(".env");
            std::fs::read_to_string(&path)
                .map(|text| parse_env(&text))
                .map_err(|e| ImportError {
                    file: path,
                    line: 0,
                    message: format!("cannot read it: {e}"),
                })
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            master: read("master")?,
            backup: read("backup")?,
        })
    }

    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.master
            .get(key)
            .or_else(|| self.backup.get(key))
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}
