//! The `wimark-ha` binary: daemon and CLI in one. All logic lives in the
//! library; this only parses arguments, sets up logging and reports errors.
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = wimark_ha::cli::Cli::parse();
    let logging = cli.init_logging();
    let outcome = cli.run();
    // Every log line out before the last word.
    drop(logging);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line: what is wrong and what to do (the context chain);
            // in the journal at priority "err".
            let priority = if wimark_ha::cli::journal::stderr_is_journal() {
                "<3>"
            } else {
                ""
            };
            eprintln!("{priority}wimark-ha: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
