//! `wimark-ha stats` as users run it: the JSON contract with exact counts,
//! and one-line errors with a non-zero exit for bad input.

use std::{
    os::unix::process::CommandExt as _,
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use wimark_ha_tests::{
    frames::catalogue,
    lab::{self, in_netns, Lab},
    sockets::PacketSocket,
    wimark_ha_bin,
};

fn two_servers() -> (Lab, String, String) {
    lab::two_servers(false).expect("two-server lab")
}

/// Runs the binary inside `namespace` (a child forked from a thread in the
/// namespace inherits it).
fn wimark_ha_in(namespace: &str, args: &[&str], uid: Option<u32>) -> std::process::Child {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let binary = wimark_ha_bin();
    in_netns(namespace, move || {
        let mut command = Command::new(binary);
        command
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(uid) = uid {
            command.uid(uid).gid(uid);
        }
        command.spawn()
    })
    .expect("netns")
    .expect("spawn wimark-ha")
}

fn xdp_attached(namespace: &str) -> bool {
    in_netns(namespace, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(wimark_ha::monitor::attached_xdp_program("eth1"))
            .expect("netlink")
            .is_some()
    })
    .expect("netns")
}

fn stderr_line(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| l.contains("error"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn stats_json_reports_exact_counts_and_detaches() {
    let (_lab, a, b) = two_servers();
    let child = wimark_ha_in(
        &b,
        &["stats", "--iface", "eth1", "--duration", "3s", "--json"],
        None,
    );
    wait_attached(&b);
    send_catalogue(&a);
    let cases = catalogue();
    let output = child.wait_with_output().expect("wait");
    assert!(
        output.status.success(),
        "stats failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object on stdout");

    let expect = |counter: wimark_ha_common::abi::Counter| {
        cases.iter().filter(|c| c.expected == counter).count() as u64
    };
    use wimark_ha_common::abi::Counter::*;
    assert_eq!(json["interface"], "eth1");
    assert_eq!(json["vrrp"]["valid"], expect(VrrpValid));
    assert_eq!(json["vrrp"]["tagged"], expect(VrrpTagged));
    for (name, counter) in [
        ("ttl", VrrpInvalidTtl),
        ("version", VrrpInvalidVersion),
        ("type", VrrpInvalidType),
        ("length", VrrpInvalidLength),
        ("checksum", VrrpInvalidChecksum),
        ("address_count", VrrpInvalidAddressCount),
        ("fragment", VrrpInvalidFragment),
    ] {
        assert_eq!(
            json["vrrp"]["invalid"][name],
            expect(counter),
            "invalid.{name}"
        );
    }
    for (name, counter) in [
        ("ike", Ike),
        ("nat_t", NatT),
        ("esp", Esp),
        ("mqtt", Mqtt),
        ("mqtt_tls", MqttTls),
    ] {
        assert_eq!(
            json["ap"][name]["packets"],
            expect(counter),
            "ap.{name}.packets"
        );
        let bytes: u64 = cases
            .iter()
            .filter(|c| c.expected == counter)
            .map(|c| c.frame.len() as u64)
            .sum();
        assert_eq!(json["ap"][name]["bytes"], bytes, "ap.{name}.bytes");
    }
    assert_eq!(json["other"]["packets"], expect(Other));
    assert_eq!(json["ap"]["active_aps"], 3);
    let peers = json["vrrp"]["peers"].as_array().expect("peers array");
    assert_eq!(peers.len(), 2, "{peers:?}");
    let a4 = peers
        .iter()
        .find(|p| p["source"] == "10.77.0.1")
        .expect("peer 10.77.0.1");
    assert_eq!(a4["vrid"], 67);
    for field in ["priority", "interval_ms", "adverts", "last_seen_ms_ago"] {
        assert!(a4[field].is_u64(), "peer field {field}: {a4}");
    }
    assert!(!xdp_attached(&b), "stats left its XDP program on eth1");
}

#[test]
fn missing_interface_is_a_one_line_error() {
    let (_lab, _a, b) = two_servers();
    let output = wimark_ha_in(&b, &["stats", "--iface", "eth9", "--duration", "1s"], None)
        .wait_with_output()
        .expect("wait");
    assert_eq!(output.status.code(), Some(1));
    let line = stderr_line(&output);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains("`eth9` does not exist"), "{line}");
    assert!(output.stdout.is_empty());
}

/// `run` on an interface that does not exist says so once (issue 14, item
/// 5: "interface `eth9`: interface `eth9` does not exist" said it twice).
#[test]
fn run_on_a_missing_interface_names_it_once() {
    let (_lab, _a, b) = two_servers();
    let scratch = wimark_ha_tests::Scratch::new("cli-missing-iface");
    let config = scratch.0.join("wimark-ha.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ncontrol_socket = \"{0}/control.sock\"\n\n[[instance]]\nname = \"WIM1\"\ninterface = \"eth9\"\nvrid = 67\npriority = 100\nvirtual_ips = [\"10.77.0.100/24\"]\n",
            scratch.0.display()
        ),
    )
    .expect("config");
    let state = scratch.0.join("state");
    let output = wimark_ha_in(
        &b,
        &["run", "--config", &config.display().to_string(), "--state-dir", &state.display().to_string()],
        None,
    )
    .wait_with_output()
    .expect("wait");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`eth9` does not exist"), "{stderr}");
    assert_eq!(stderr.matches("`eth9`").count(), 1, "named once:\n{stderr}");
}

#[test]
fn unprivileged_user_is_told_what_permission_is_missing() {
    let (_lab, _a, b) = two_servers();
    let output = wimark_ha_in(
        &b,
        &["stats", "--iface", "eth1", "--duration", "1s"],
        Some(65534),
    )
    .wait_with_output()
    .expect("wait");
    assert_eq!(output.status.code(), Some(1));
    let line = stderr_line(&output);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.contains("not permitted to load BPF programs"),
        "{line}"
    );
    assert!(line.contains("CAP_BPF"), "says what to grant: {line}");
    assert!(!xdp_attached(&b));
}

#[test]
fn busy_interface_names_the_program_holding_it() {
    let (_lab, _a, b) = two_servers();
    let first = wimark_ha_in(
        &b,
        &["stats", "--iface", "eth1", "--duration", "4s", "--json"],
        None,
    );
    wait_attached(&b);
    let second = wimark_ha_in(&b, &["stats", "--iface", "eth1", "--duration", "1s"], None)
        .wait_with_output()
        .expect("wait");
    assert_eq!(second.status.code(), Some(1));
    let line = stderr_line(&second);
    assert!(
        line.contains("already has an XDP program attached") && line.contains("--force"),
        "{line}"
    );
    assert!(first.wait_with_output().expect("wait").status.success());
}

#[test]
fn bad_arguments_are_refused_before_anything_is_attached() {
    let (_lab, _a, b) = two_servers();
    for args in [
        &["stats", "--iface", "eth1", "--duration", "soon"][..],
        &["stats", "--iface", "eth1", "--interval", "0s"][..],
        &["stats"][..],
    ] {
        let output = wimark_ha_in(&b, args, None)
            .wait_with_output()
            .expect("wait");
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: clap usage errors exit 2"
        );
        assert!(!String::from_utf8_lossy(&output.stderr).is_empty());
    }
    assert!(!xdp_attached(&b));
}

/// Sends one copy of each catalogue frame from A's `peer0`.
fn send_catalogue(namespace: &str) {
    let frames: Vec<Vec<u8>> = catalogue().into_iter().map(|c| c.frame).collect();
    in_netns(namespace, move || -> anyhow::Result<()> {
        let socket = PacketSocket::bind("eth1", false)?;
        for frame in &frames {
            socket.send(frame)?;
        }
        Ok(())
    })
    .expect("netns")
    .expect("send");
}

fn wait_attached(namespace: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !xdp_attached(namespace) {
        assert!(
            Instant::now() < deadline,
            "stats did not attach within 10 s"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kernel_diagnostics_only_with_log_level_debug() {
    let (_lab, a, b) = two_servers();
    for (debug, args) in [
        (
            true,
            &[
                "--log-level",
                "debug",
                "stats",
                "--iface",
                "eth1",
                "--duration",
                "2s",
                "--json",
            ][..],
        ),
        (
            false,
            &["stats", "--iface", "eth1", "--duration", "2s", "--json"][..],
        ),
    ] {
        let child = wimark_ha_in(&b, args, None);
        wait_attached(&b);
        send_catalogue(&a);
        let output = child.wait_with_output().expect("wait");
        assert!(output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        // stderr is a pipe here, as journald is under systemd.
        assert!(
            !stderr.contains('\x1b'),
            "ANSI escape codes in logs written to a pipe:\n{stderr}"
        );
        for reason in [
            "ttl",
            "version",
            "type",
            "length",
            "checksum",
            "address_count",
            "fragment",
        ] {
            let line = format!("VRRP packet rejected: {reason}");
            assert_eq!(
                stderr.contains(&line),
                debug,
                "debug={debug}, `{line}` in:\n{stderr}"
            );
        }
    }
}

/// Under systemd stderr is the journal, named by `$JOURNAL_STREAM`
/// (device:inode): then the error line carries its syslog priority (`<3>`),
/// so `journalctl -p err` shows it; anywhere else it stays plain, and a
/// `$JOURNAL_STREAM` inherited by a process whose stderr went elsewhere is
/// not believed.
#[test]
fn an_error_reaches_the_journal_at_priority_err() {
    use std::os::unix::fs::MetadataExt as _;
    let scratch = wimark_ha_tests::Scratch::new("journal-priority");
    let run = |journal_stream: Option<&str>| -> String {
        let path = scratch.0.join("stderr");
        let file = std::fs::File::create(&path).expect("stderr file");
        let stat = std::fs::metadata(&path).expect("stat");
        let named = format!("{}:{}", stat.dev(), stat.ino());
        let mut command = Command::new(wimark_ha_bin());
        command
            .args(["run", "--config", "/nonexistent/wimark-ha.toml"])
            .stdout(Stdio::null())
            .stderr(file)
            .env_remove("JOURNAL_STREAM");
        match journal_stream {
            Some("this file") => command.env("JOURNAL_STREAM", &named),
            Some(other) => command.env("JOURNAL_STREAM", other),
            None => &mut command,
        };
        let status = command.status().expect("wimark-ha run");
        assert!(!status.success(), "a missing config must fail");
        std::fs::read_to_string(&path).expect("stderr")
    };
    let journal = run(Some("this file"));
    assert!(
        journal.starts_with("<3>wimark-ha: error: ") && journal.contains("/nonexistent/wimark-ha.toml"),
        "{journal:?}"
    );
    let plain = run(None);
    assert!(plain.starts_with("wimark-ha: error: "), "{plain:?}");
    let inherited = run(Some("1:2"));
    assert!(inherited.starts_with("wimark-ha: error: "), "{inherited:?}");
}
