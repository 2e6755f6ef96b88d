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
mod from_env;
mod output;
mod syntax;

pub use convert::convert;
pub use env::{parse_env, VendorEnv};
pub use syntax::{decode_keepalived, parse_keepalived, ImportError, Statement};

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
    fn a_block_opened_on_the_next_line_belongs_to_the_statement_before() {
        let text = "vrrp_instance A\n{\n  interface eth1\n}\nvrrp_instance B\n{ interface eth2 }\n";
        let parsed = parse_keepalived(text, Path::new("k.conf")).expect("parses");
        assert_eq!(parsed.len(), 2, "{parsed:?}");
        assert_eq!((parsed[0].words.clone(), parsed[0].line), (vec!["vrrp_instance".to_string(), "A".to_string()], 1));
        assert_eq!(parsed[0].children()[0].words, ["interface", "eth1"]);
        assert_eq!(parsed[1].children()[0].words, ["interface", "eth2"]);
        let e = parse_keepalived("{\n}\n", Path::new("k.conf")).expect_err("a bare block");
        assert_eq!(e.line, 1);
    }

    #[test]
    fn definitions_are_expanded_and_undefined_names_refused() {
        let text = "$IFACE=eth1\n$VIP=10.10.10.3/24\nvrrp_instance A {\n interface $IFACE # on ${IFACE}\n virtual_ipaddress {\n  ${VIP}\n }\n auth_pass \"pa$\"\n}\n";
        let parsed = parse_keepalived(text, Path::new("k.conf")).expect("parses");
        assert_eq!(parsed.len(), 1, "definitions are not statements: {parsed:?}");
        let instance = parsed[0].children();
        assert_eq!(instance[0].words, ["interface", "eth1"]);
        assert_eq!(instance[1].children()[0].words, ["10.10.10.3/24"]);
        assert_eq!(instance[2].words, ["auth_pass", "pa$"], "a lone $ is kept");
        let e = parse_keepalived("a {\n interface $IFACE\n}\n", Path::new("k.conf"))
            .expect_err("undefined");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("`$IFACE` is not defined"), "{e}");
    }

    #[test]
    fn non_utf8_is_fine_in_comments_only() {
        let text = decode_keepalived(b"a { # caf\xe9\n b\n}\n", Path::new("k.conf")).expect("a comment");
        assert_eq!(parse_keepalived(&text, Path::new("k.conf")).expect("parses")[0].children()[0].words, ["b"]);
        let e = decode_keepalived(b"a {\n b caf\xe9\n}\n", Path::new("k.conf")).expect_err("code");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("not UTF-8 outside a comment"), "{e}");
    }

    #[test]
    fn no_notify_is_dropped_without_a_word() {
        let conf = |second: &str| {
            format!(
                "vrrp_instance A {{\n interface eth1\n virtual_router_id 1\n notify /usr/local/bin/a\n}}\nvrrp_instance B {{\n interface eth1\n virtual_router_id 2\n {second}\n}}\n"
            )
        };
        let convert_text = |text: &str| {
            let parsed = parse_keepalived(text, Path::new("k.conf")).expect("parses");
            convert(&parsed, Path::new("k.conf"), None)
        };
        // Two scripts: the first is carried, the second named, not lost.
        let out = convert_text(&conf("notify /usr/local/bin/b"));
        assert!(out.contains("[notify]\nscript = \"/usr/local/bin/a\""), "{out}");
        assert!(out.contains("(line 9): `notify /usr/local/bin/b`"), "{out}");
        assert!(out.contains("`/usr/local/bin/a` (line 4) is the one carried over"), "{out}");
        // The same script twice: one [notify], no note.
        let out = convert_text(&conf("notify /usr/local/bin/a"));
        assert_eq!(out.matches("script = ").count(), 1, "{out}");
        assert!(!out.contains("`notify"), "{out}");
        // keepalived splits a notify with arguments into argv: not a path.
        let out = convert_text(&conf("notify \"/usr/local/bin/b --flag\""));
        assert!(out.contains("(line 9): `notify /usr/local/bin/b --flag`"), "{out}");
        assert!(out.contains("a notify with arguments"), "{out}");
        assert!(!out.contains("script = \"/usr/local/bin/b --flag\""), "{out}");
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
