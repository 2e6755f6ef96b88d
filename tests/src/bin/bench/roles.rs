//! `cargo xtask bench roles`: switching a 5-container stack, the seed's way
//! (`docker-compose -p backup down && docker-compose -p master up -d`, as
//! `master-backup.sh` does) and wimark-ha's way (containers created once,
//! stopped and started in parallel through the Docker API, ready when
//! running, then the settle check), side by side on the same dockerd.

use std::{process::Command, time::Instant};

use anyhow::{bail, Context as _, Result};
use wimark_ha::{
    config::{RolesConfig, Selector},
    roles::Switcher,
};
use wimark_ha_tests::docker::{image, require_dockerd};

const SERVICES: usize = 5;

fn compose(dir: &std::path::Path, project: &str, args: &[&str]) -> Result<()> {
    let status = Command::new("docker-compose")
        .current_dir(dir)
        .args(["-p", project])
        .args(args)
        .env("DOCKER_BUILDKIT", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .context("docker-compose (Debian package docker-compose)")?;
    if !status.success() {
        bail!("docker-compose -p {project} {args:?} failed");
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn run(trials: usize) -> Result<()> {
    require_dockerd();
    let image = image();
    let dir = std::env::temp_dir().join(format!("wimark-ha-bench-roles-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut yaml = String::from("version: \"2.4\"\nservices:\n");
    for i in 0..SERVICES {
        yaml.push_str(&format!(
            "  svc{i}:\n    image: {image}\n    network_mode: none\n"
        ));
    }
    std::fs::write(dir.join("docker-compose.yml"), yaml)?;
    let tag = format!("whb{}", std::process::id());
    let (master, backup) = (format!("{tag}master"), format!("{tag}backup"));
    let result = (|| -> Result<()> {
        // The seed's procedure: down one stack (containers removed), up the other.
        compose(&dir, &backup, &["up", "-d"])?;
        let mut seed = Vec::new();
        for n in 0..trials {
            let (from, to) = if n % 2 == 0 {
                (&backup, &master)
            } else {
                (&master, &backup)
            };
            let started = Instant::now();
            compose(&dir, from, &["down"])?;
            compose(&dir, to, &["up", "-d"])?;
            seed.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        compose(&dir, &master, &["down"])?;
        compose(&dir, &backup, &["down"])?;
        // wimark-ha's: both stacks created once (`up --no-start`), then switched.
        compose(&dir, &master, &["up", "--no-start"])?;
        compose(&dir, &backup, &["up", "--no-start"])?;
        let switcher = Switcher::new(RolesConfig {
            instance: "WIM1".to_string(),
            docker_socket: "/var/run/docker.sock".into(),
            master: Selector::ComposeProject(master.clone()),
            backup: Selector::ComposeProject(backup.clone()),
            stop_timeout: std::time::Duration::from_secs(5),
            demote_delay: std::time::Duration::ZERO,
            start_timeout: std::time::Duration::from_secs(60),
            master_processes: Vec::new(),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (mut ready, mut total, mut stop, mut start) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for n in 0..trials {
            let record = runtime
                .block_on(switcher.switch_once(n % 2 == 0))
                .map_err(anyhow::Error::msg)?;
            if !record.problems.is_empty() {
                bail!("switch reported problems: {:?}", record.problems);
            }
            ready.push(record.ready_ms + record.stop_ms);
            total.push(record.total_ms);
            stop.push(record.stop_ms);
            start.push(record.ready_ms);
        }
        let (seed, ready, total) = (median(seed), median(ready), median(total));
        let (stop, start) = (median(stop), median(start));
        println!("## Role switch (`cargo xtask bench roles -- --trials {trials}`)\n");
        println!("A {SERVICES}-container stack (FROM-scratch busybox, `network_mode: none`), {trials} switches each way alternately, medians.\n");
        println!("| procedure | median switch (ms) | ratio to the seed |");
        println!("|---|---:|---:|");
        println!("| seed: `docker-compose down` + `docker-compose up -d` | {seed:.0} | 1.0x |");
        println!(
            "| wimark-ha: stop + start in parallel, all running | {ready:.0} | {:.1}x faster |",
            seed / ready
        );
        println!(
            "| wimark-ha: the same plus the 300 ms settle check | {total:.0} | {:.1}x faster |",
            seed / total
        );
        println!("\nwimark-ha's switch, medians: stop of the old stack {stop:.0} ms, start until all running {start:.0} ms.");
        Ok(())
    })();
    let _ = compose(&dir, &master, &["down"]);
    let _ = compose(&dir, &backup, &["down"]);
    std::fs::remove_dir_all(&dir).ok();
    result
}
