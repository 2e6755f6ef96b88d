//! `wimark-ha generate-docs --out DIR` (hidden): the man page wimark-ha(8)
//! and the bash, zsh and fish completions, generated from the command-line
//! definition itself so they never drift from it. The package build runs it.
//!
//! Owns: those files. Must not: touch anything outside `--out`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::CommandFactory as _;

#[derive(Debug, clap::Args)]
pub struct GenerateDocsArgs {
    /// Directory to write wimark-ha.8, wimark-ha.bash, _wimark-ha and
    /// wimark-ha.fish into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: GenerateDocsArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let command = super::Cli::command();
    let write = |name: &str, bytes: Vec<u8>| -> anyhow::Result<()> {
        let path = args.out.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .section("8")
        .render(&mut page)
        .context("rendering the man page")?;
    write("wimark-ha.8", page)?;
    for (shell, name) in [
        (clap_complete::Shell::Bash, "wimark-ha.bash"),
        (clap_complete::Shell::Zsh, "_wimark-ha"),
        (clap_complete::Shell::Fish, "wimark-ha.fish"),
    ] {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command.clone(), "wimark-ha", &mut script);
        write(name, script)?;
    }
    Ok(())
}
