//! `wimark-ha doctor`: print the checks of `crate::doctor`, one line each.

use std::path::PathBuf;

use clap::Args;

use crate::{
    config,
    doctor::{self, Finding, Status},
};

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The config whose instances, [roles] and [peer] are checked.
    #[arg(long, default_value = "/etc/wimark-ha/wimark-ha.toml")]
    pub config: PathBuf,
    /// Print a JSON array of {check, status, detail, fix} instead.
    #[arg(long)]
    pub json: bool,
}

/// Exit code: 0 when nothing FAILed (WARNs allowed), 1 otherwise.
pub async fn run(args: DoctorArgs) -> anyhow::Result<bool> {
    let (config, mut findings) = match config::load(&args.config) {
        Ok(config) => (
            Some(config),
            vec![Finding {
                check: "config".to_string(),
                status: Status::Ok,
                detail: format!("{} is valid", args.config.display()),
                fix: None,
            }],
        ),
        Err(e) => (
            None,
            vec![Finding {
                check: "config".to_string(),
                status: Status::Fail,
                detail: e.to_string(),
                fix: Some(
                    "fix the config (wimark-ha check-config), or generate one with wimark-ha import-keepalived"
                        .to_string(),
                ),
            }],
        ),
    };
    findings.extend(doctor::run(config.as_ref()).await);
    if args.json {
        println!("{}", serde_json::to_string(&findings)?);
    } else {
        for f in &findings {
            let status = match f.status {
                Status::Ok => "OK  ",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            match &f.fix {
                Some(fix) => println!("{status} {}: {} — fix: {fix}", f.check, f.detail),
                None => println!("{status} {}: {}", f.check, f.detail),
            }
        }
    }
    Ok(findings.iter().all(|f| f.status != Status::Fail))
}
