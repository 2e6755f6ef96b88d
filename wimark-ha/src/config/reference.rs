//! The operator's guide documents every key the parser accepts: each
//! section is fed an unknown key, and serde's "expected one of …" list is
//! checked against the guide's configuration reference.

use super::*;

const INSTANCE: &str =
    "[[instance]]\nname = \"WIM1\"\ninterface = \"eth1\"\nvrid = 67\npriority = 200\nvirtual_ips = [\"10.0.0.3/24\"]\n";
const ROLES: &str = "[roles]\ninstance = \"WIM1\"\nmaster = { compose_project = \"m\" }\nbackup = { compose_project = \"b\" }\n";

fn accepted_keys(text: &str) -> Vec<String> {
    let error = parse(text, Path::new("t.toml")).expect_err("an unknown key is refused");
    let expected = error
        .message
        .split("expected")
        .nth(1)
        .unwrap_or_else(|| panic!("no list of expected keys in `{}`", error.message));
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn every_key_is_in_the_operators_guide() {
    let guide = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operator-guide.md"),
    )
    .expect("docs/operator-guide.md");
    let reference = guide
        .split("## Configuration reference")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Configuration reference section");
    let words: HashSet<&str> = reference
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    let sections = [
        format!("zz_unknown = 1\n{INSTANCE}"),
        format!("[daemon]\nzz_unknown = 1\n{INSTANCE}"),
        format!("{INSTANCE}zz_unknown = 1\n"),
        format!("{INSTANCE}fast_detect = {{ interval = \"1ms\", multiplier = 3, zz_unknown = 1 }}\n"),
        format!("{INSTANCE}{ROLES}zz_unknown = 1\n"),
        format!("{INSTANCE}{}", ROLES.replace("\"m\" }", "\"m\", zz_unknown = 1 }")),
        format!("{INSTANCE}{ROLES}[[roles.master_process]]\nrun = [\"x\"]\nzz_unknown = 1\n"),
        format!("{INSTANCE}[hooks]\nzz_unknown = 1\n"),
        format!("{INSTANCE}[[hooks.before_promote]]\nremove = \"/x\"\nzz_unknown = 1\n"),
        format!("{INSTANCE}[notify]\nscript = \"/x\"\nzz_unknown = 1\n"),
        format!("{INSTANCE}[peer]\naddress = \"10.0.0.2\"\nzz_unknown = 1\n"),
        format!("{INSTANCE}[metrics]\nlisten = \"127.0.0.1:9650\"\nzz_unknown = 1\n"),
        format!("{INSTANCE}peers = [\"10.0.0.2\"]\n[[instance.heartbeat]]\ninterface = \"eth0\"\npeer = \"10.1.0.2\"\nzz_unknown = 1\n"),
        format!("{INSTANCE}{ROLES}[fencing]\ncommand = [\"true\"]\nzz_unknown = 1\n"),
        format!("{INSTANCE}[[instance.track]]\ninterface = \"eth0\"\nzz_unknown = 1\n"),
        format!("{INSTANCE}[[sync_group]]\nname = \"G\"\ninstances = [\"a\", \"b\"]\nzz_unknown = 1\n"),
        format!("{INSTANCE}{ROLES}[witness]\nendpoints = [\"http://10.0.0.9:2379\"]\nkey = \"/k\"\nzz_unknown = 1\n"),
        format!("{INSTANCE}{ROLES}[witness]\nendpoints = [\"http://10.0.0.9:2379\"]\nkey = \"/k\"\ntls = {{ ca = \"/ca\", zz_unknown = 1 }}\n"),
    ];
    let mut missing = Vec::new();
    for text in &sections {
        let keys = accepted_keys(text);
        assert!(!keys.is_empty(), "{text}");
        for key in keys {
            if !words.contains(key.as_str()) {
                missing.push(key);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys missing from the guide's configuration reference: {missing:?}"
    );
}

#[test]
fn the_readmes_example_config_is_valid() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let example: Vec<&str> = readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .collect();
    assert!(
        example.len() >= 2,
        "the README shows its config in ```toml blocks"
    );
    let config = parse(&example.join("\n"), Path::new("README.md"))
        .unwrap_or_else(|e| panic!("the README's example config: {e}"));
    assert!(config.roles.is_some() && config.fencing.is_some());
    assert_eq!(config.instances[0].heartbeats.len(), 1);
}
