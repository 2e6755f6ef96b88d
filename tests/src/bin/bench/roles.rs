//! `cargo xtask bench roles`: switching a 5-container stack, the seed's way
//! (`docker-compose -p backup down && docker-compose -p master up -d`, as
//! `master-backup.sh` does) and wimark-ha's way (containers created once,
//! stopped and started in parallel through the Docker API, ready when
//! running, then the settle check), side by side on the same dockerd.

use std::time::Instant;

use anyhow::{bail, Result};
use wimark_ha::{
    config::{RolesConfig, Selector},
    roles::Switcher,
};
use wimark_ha_tests::docker::{image, require_dockerd, ComposeProject};

const SERVICES: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn roles(master: Selector, backup: Selector) -> RolesConfig {
    RolesConfig {
        instance: "WIM1".to_string(),
        docker_socket: "/var/run/docker.sock".into(),
        master,
        backup,
        stop_timeout: std::time::Duration::from_secs(5),
        demote_delay: std::time::Duration::ZERO,
        start_timeout: std::time::Duration::from_secs(60),
        master_processes: Vec::new(),
    }
}

/// One service of a compose project.
fn service(project: &str, service: &str) -> Selector {
    Selector::Labels(
        [
            ("com.docker.compose.project", project),
            ("com.docker.compose.service", service),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    )
}

pub fn run(trials: usize) -> Result<()> {
    require_dockerd();
    let image = image();
    let dir = std::env::temp_dir().join(format!("wimark-ha-bench-roles-{}", std::process::id()));
    let mut yaml = String::from("version: \"2.4\"\nservices:\n");
    for i in 0..SERVICES {
        yaml.push_str(&format!(
            "  svc{i}:\n    image: {image}\n    network_mode: none\n"
        ));
    }
    let tag = format!("whb{}", std::process::id());
    // Both projects share the file; each is taken down when dropped.
    let master = ComposeProject::create(&dir, &format!("{tag}master"), &yaml)?;
    let backup = ComposeProject::create(&dir, &format!("{tag}backup"), &yaml)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    // The seed's procedure: down one stack (containers removed), up the other.
    master.compose(&["down"])?;
    backup.compose(&["up", "-d"])?;
    let mut seed = Vec::new();
    for n in 0..trials {
        let (from, to) = if n % 2 == 0 {
            (&backup, &master)
        } else {
            (&master, &backup)
        };
        let started = Instant::now();
        from.compose(&["down"])?;
        to.compose(&["up", "-d"])?;
        seed.push(started.elapsed().as_secs_f64() * 1000.0);
    }

    // wimark-ha's: both stacks created once (`up --no-start`), then switched.
    for project in [&master, &backup] {
        project.compose(&["down"])?;
        project.compose(&["up", "--no-start"])?;
    }
    let switch = |switcher: &Switcher, to_master: bool| {
        let record = runtime
            .block_on(switcher.switch_once(to_master))
            .map_err(anyhow::Error::msg)?;
        if !record.problems.is_empty() {
            bail!("switch reported problems: {:?}", record.problems);
        }
        Ok(record)
    };
    let stacks = Switcher::new(roles(
        Selector::ComposeProject(master.project.clone()),
        Selector::ComposeProject(backup.project.clone()),
    ));
    let (mut ready, mut total, mut stop, mut start) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for n in 0..trials {
        let record = switch(&stacks, n % 2 == 0)?;
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        ready.push(ms(record.ready + record.stop));
        total.push(ms(record.total));
        stop.push(ms(record.stop));
        start.push(ms(record.ready));
    }
    // The floor under any API-driven switch: one container started alone.
    switch(&stacks, false)?;
    let single = Switcher::new(roles(
        service(&master.project, "svc0"),
        service(&backup.project, "svc0"),
    ));
    let mut one = Vec::new();
    for n in 0..trials {
        let record = switch(&single, n % 2 == 0)?;
        one.push(record.ready.as_secs_f64() * 1e3);
    }

    let (seed, ready, total) = (median(seed), median(ready), median(total));
    let (stop, start, one) = (median(stop), median(start), median(one));
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
    println!(
        "Floor: one container alone, started through the API until running: {one:.0} ms; \
         the 10x target ({:.0} ms for the whole switch) is {:.1} single-container starts.",
        seed / 10.0,
        seed / 10.0 / one
    );
    drop((master, backup));
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
