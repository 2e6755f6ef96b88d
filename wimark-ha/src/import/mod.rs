//! `wimark-ha import-keepalived`: a keepalived.conf (and the vendor's
//! `/etc/wimark/{master,backup}/.env`) turned into an equivalent wimark-ha
//! config. What cannot be carried over is written into the output as a
//! comment naming the keyword and its line — never dropped silently.
//!
//! Owns: reading keepalived's config syntax and the mapping of its keywords.
//! Must not: validate the result (that is `config::parse`, which the CLI runs
//! on the output) or touch the system.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

mod convert;
mod env;
mod syntax;

pub use convert::convert;
pub use env::{parse_env, VendorEnv};
pub use syntax::{parse_keepalived, ImportError, Statement};

#[cfg(test)]
mod tests {
    use super::{convert::seconds, *};

    #[test]
    fn blocks_on_one_line_and_comments() {
        let text = "global_defs { router_id x } # c\n! bang\nvrrp_instance A {\n  authentication {\n auth_type PASS\n auth_pass \"a b\"\n }\n}\n";
        let parsed = parse_keepalived(text, Path::new("k.conf")).expect("parses");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].children()[0].words, ["router_id", "x"]);
        let auth = &parsed[1].children()[0];
        assert_eq!(auth.children()[1].words, ["auth_pass", "a b"]);
        assert_eq!(auth.children()[1].line, 6);
    }

    #[test]
    fn unbalanced_braces_name_the_line() {
        let e = parse_keepalived("a {\n b\n", Path::new("k.conf")).expect_err("refused");
        assert_eq!(
            (e.line, e.to_string()),
            (1, "k.conf:1: this `{` is never closed".to_string())
        );
        let e = parse_keepalived("a\n}\n", Path::new("k.conf")).expect_err("refused");
        assert_eq!(e.line, 2);
    }

    #[test]
    fn seconds_become_durations() {
        assert_eq!(seconds("1").as_deref(), Some("1s"));
        assert_eq!(seconds("0.01").as_deref(), Some("10ms"));
        assert_eq!(seconds("x"), None);
        assert_eq!(seconds("-1"), None);
    }

    #[test]
    fn env_files_with_comments() {
        let env = parse_env("VIP=10.10.10.3 # shared\n# whole line\nUSERNAME=user\n\nBROKEN\n");
        assert_eq!(env.get("VIP").map(String::as_str), Some("10.10.10.3"));
        assert_eq!(env.get("USERNAME").map(String::as_str), Some("user"));
        assert_eq!(env.len(), 2);
    }
}
