//! `wimark-ha import-keepalived`: print the wimark-ha config equivalent to a
//! keepalived.conf, checked by the same validation as `check-config`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::{config, import};

#[derive(Debug, Args)]
pub struct ImportKeepalivedArgs {
    /// The keepalived config to carry over.
    #[arg(default_value = "/etc/keepalived/keepalived.conf")]
    pub keepalived_conf: PathBuf,
    /// The vendor's directory holding `master/.env` and `backup/.env`
    /// (usually /etc/wimark): fills in the peer and the `[roles]` section
    /// that replaces master-backup.sh.
    #[arg(long)]
    pub env_dir: Option<PathBuf>,
    /// Write the config here instead of standard output (refused if the file
    /// exists, so an existing config is never overwritten), mode 0600: it
    /// may hold the VRRPv2 password.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

pub fn run(args: ImportKeepalivedArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.keepalived_conf)
        .with_context(|| format!("reading {}", args.keepalived_conf.display()))?;
    let text = import::decode_keepalived(&bytes, &args.keepalived_conf)?;
    let statements = import::parse_keepalived(&text, &args.keepalived_conf)?;
    let env = match &args.env_dir {
        Some(dir) => Some(import::VendorEnv::read(dir)?),
        None => None,
    };
    let converted = import::convert(&statements, &args.keepalived_conf, env.as_ref());
    // The output must be a config wimark-ha accepts; if it is not, say why
    // rather than hand the operator a file that fails at start-up.
    let name = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from("<imported config>"));
    let checked = config::parse(&converted, &name).map_err(|e| {
        anyhow::anyhow!("the imported config is not valid: {e}\n--- imported text ---\n{converted}")
    })?;
    for warning in &checked.warnings {
        eprintln!("warning: {warning}");
    }
    // What was not carried over is in the output as comments; said here
    // too, so that it is seen when the output goes to a file.
    let not_carried: Vec<&str> = converted
        .lines()
        .filter_map(|l| l.strip_prefix("# not carried over "))
        .collect();
    for line in &not_carried {
        eprintln!("not carried over {line}");
    }
    if !not_carried.is_empty() {
        eprintln!(
            "{} statement(s) not carried over: read them (also in the output) before using it",
            not_carried.len()
        );
    }
    match &args.output {
        None => print!("{converted}"),
        Some(path) => {
            use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
            // 0600: the config may hold the VRRPv2 auth_pass, and the daemon
            // refuses a config others may write anyway.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
            file.write_all(converted.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}
