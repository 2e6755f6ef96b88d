//! `wimark-ha check-config`: a good file is summarised, a bad one names
//! file, line and key and exits 1, a world-writable one is refused. No root
//! needed: runs in a plain `cargo test`.

use std::process::{Command, Output};

/// The error lines of a run's stderr.
fn stderr_line(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| l.contains("error"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn check_config_names_file_line_and_key_and_exits_non_zero() {
    let dir = std::env::temp_dir().join(format!("wimark-ha-check-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("wimark-ha.toml");
    let good = "[[instance]]\nname = \"WIM1\"\ninterface = \"eth1\"\nvrid = 67\npriority = 200\nversion = 3\nadvert_interval = \"10ms\"\nvirtual_ips = [\"10.10.10.3/24\"]\n";
    std::fs::write(&path, good).expect("write");
    let ok = Command::new(env!("CARGO_BIN_EXE_wimark-ha"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("WIM1: eth1 VRID 67"));

    std::fs::write(&path, good.replace("\"10ms\"", "\"15ms\"")).expect("write");
    let bad = Command::new(env!("CARGO_BIN_EXE_wimark-ha"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(1));
    let line = stderr_line(&bad);
    assert!(
        line.contains(&format!("{}:7: advert_interval:", path.display())),
        "{line}"
    );
    assert!(line.contains("steps of 10ms"), "{line}");

    // A valid file anyone may write is refused: it names programs run as root.
    std::fs::write(&path, good).expect("write");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let writable = Command::new(env!("CARGO_BIN_EXE_wimark-ha"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(writable.status.code(), Some(1));
    let line = stderr_line(&writable);
    assert!(line.contains("is world-writable (mode 666)"), "{line}");
}

/// Issue 14, item 5: trusted as sshd's StrictModes trusts its files. A FIFO
/// hung `check-config` and `/dev/zero` ate memory before.
#[test]
fn only_a_regular_private_bounded_file_is_read() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::time::{Duration, Instant};
    let dir = std::env::temp_dir().join(format!("wimark-ha-strict-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let check = |path: &std::path::Path| {
        let started = Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_wimark-ha"))
            .args(["check-config", "--config"])
            .arg(path)
            .output()
            .expect("run");
        assert!(started.elapsed() < Duration::from_secs(10), "{path:?} took {:?}", started.elapsed());
        assert_eq!(output.status.code(), Some(1), "{path:?}");
        stderr_line(&output)
    };
    let good = "[[instance]]\nname = \"WIM1\"\ninterface = \"eth1\"\nvrid = 67\npriority = 200\nversion = 3\nadvert_interval = \"10ms\"\nvirtual_ips = [\"10.10.10.3/24\"]\n";
    let group = dir.join("group.toml");
    std::fs::write(&group, good).expect("write");
    std::fs::set_permissions(&group, std::fs::Permissions::from_mode(0o664)).expect("chmod");
    let line = check(&group);
    assert!(line.contains("is group-writable (mode 664)"), "{line}");

    let fifo = dir.join("fifo.toml");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let line = check(&fifo);
    assert!(line.contains("is not a regular file"), "{line}");

    let line = check(std::path::Path::new("/dev/zero"));
    assert!(line.contains("is not a regular file"), "{line}");

    // A control_socket path taken by a file: run would refuse it, and
    // check-config says so now (the file was deleted before).
    let taken = dir.join("taken");
    std::fs::write(&taken, b"an operator's file").expect("write");
    let socket_config = dir.join("socket.toml");
    std::fs::write(
        &socket_config,
        format!("[daemon]\ncontrol_socket = \"{}\"\n\n{good}", taken.display()),
    )
    .expect("write");
    let line = check(&socket_config);
    assert!(line.contains(":2: control_socket:") && line.contains("is not a socket"), "{line}");
    assert_eq!(std::fs::read(&taken).expect("kept"), b"an operator's file");

    let big = dir.join("big.toml");
    std::fs::write(&big, format!("{good}{}", "# padding\n".repeat(120_000))).expect("write");
    let line = check(&big);
    assert!(line.contains("a config is at most 1048576"), "{line}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_tracker_naming_a_missing_script_or_interface_is_refused_by_key() {
    let dir = std::env::temp_dir().join(format!("wimark-ha-check-config-track-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("wimark-ha.toml");
    let good = "[[instance]]\nname = \"WIM1\"\ninterface = \"eth1\"\nvrid = 67\npriority = 200\nversion = 3\nadvert_interval = \"10ms\"\nvirtual_ips = [\"10.10.10.3/24\"]\n[[instance.track]]\n";
    let check = |tracker: &str| {
        std::fs::write(&path, format!("{good}{tracker}")).expect("write");
        Command::new(env!("CARGO_BIN_EXE_wimark-ha"))
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .expect("run")
    };
    let plain_file = dir.join("not-executable");
    std::fs::write(&plain_file, "#!/bin/sh\n").expect("write");
    let not_executable = format!("script = [\"{}\"]\n", plain_file.display());
    // Present: the loopback link and an executable script.
    let ok = check("interface = \"lo\"\n[[instance.track]]\nscript = [\"/bin/true\"]\n");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let cases = [
        ("script = [\"/nonexistent/chk_mongo\"]\n", "track.script", "/nonexistent/chk_mongo"),
        (not_executable.as_str(), "track.script", "not an executable file"),
        ("interface = \"nosuch0\"\n", "track.interface", "no interface `nosuch0`"),
    ];
    for (tracker, key, words) in cases {
        let bad = check(tracker);
        assert_eq!(bad.status.code(), Some(1), "{tracker}");
        let line = stderr_line(&bad);
        assert!(line.contains(&format!("{}:10: {key}:", path.display())), "{tracker}: {line}");
        assert!(line.contains(words), "{tracker}: {line}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
