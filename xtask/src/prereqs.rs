//! Prerequisites: what building and testing need, checked first. As root on
//! Debian the missing ones are installed; elsewhere the exact commands are
//! printed and the task stops.

use std::{env, path::Path, process::Command};

use anyhow::{bail, Result};

use crate::shell::{cargo, path_with_cargo_bin, run};

/// A Debian package that provides `path`.
struct Package {
    name: &'static str,
    path: &'static str,
    why: &'static str,
}

const PACKAGES: &[Package] = &[
    Package {
        name: "protobuf-compiler",
        path: "/usr/bin/protoc",
        why: "etcd's gRPC API (the etcd-client crate compiles etcd's protos)",
    },
    // Only recommended by protobuf-compiler, and we install without
    // recommends: etcd's protos import google/protobuf/descriptor.proto.
    Package {
        name: "libprotobuf-dev",
        path: "/usr/include/google/protobuf/descriptor.proto",
        why: "the well-known protos (descriptor, struct) that etcd's protos import",
    },
    Package {
        name: "etcd-server",
        path: "/usr/bin/etcd",
        why: "the quorum witness's labs (one member and a 3-member cluster in namespaces)",
    },
    Package {
        name: "etcd-client",
        path: "/usr/bin/etcdctl",
        why: "the witness labs read and plant keys with etcdctl",
    },
    Package {
        name: "openssl",
        path: "/usr/bin/openssl",
        why: "the witness TLS lab makes its own CA and certificates",
    },
    Package {
        name: "rustc-web",
        path: "/usr/bin/rustc",
        why: "rustc with LLVM 22 for the BPF target",
    },
    Package {
        name: "libstd-rust-web-dev-bpf",
        path: "/usr/lib/rustlib/bpfel-unknown-none/lib",
        why: "precompiled core for bpfel-unknown-none",
    },
    Package {
        name: "llvm-22-dev",
        path: "/usr/lib/llvm-22/lib/libLLVM.so",
        why: "LLVM for bpf-linker",
    },
    Package {
        name: "iproute2",
        path: "/usr/bin/ip",
        why: "network namespaces for the lab and tests",
    },
    Package {
        name: "tcpdump",
        path: "/usr/bin/tcpdump",
        why: "packet captures in the lab",
    },
    Package {
        name: "bpftool",
        path: "/usr/sbin/bpftool",
        why: "inspecting loaded programs",
    },
    Package {
        name: "keepalived",
        path: "/usr/sbin/keepalived",
        why: "interop tests and the failover benchmark",
    },
    Package {
        name: "docker.io",
        path: "/usr/sbin/dockerd",
        why: "the container role tests run against a real dockerd",
    },
    Package {
        name: "docker-compose",
        path: "/usr/bin/docker-compose",
        why: "stacks created as the vendor creates them; the roles benchmark",
    },
    Package {
        name: "busybox-static",
        path: "/bin/busybox",
        why: "the FROM-scratch test image (nothing can be pulled)",
    },
    Package {
        name: "lsyncd",
        path: "/usr/bin/lsyncd",
        why: "the static-files mirror test",
    },
    Package {
        name: "rsync",
        path: "/usr/bin/rsync",
        why: "the static-files mirror test",
    },
    Package {
        name: "debootstrap",
        path: "/usr/sbin/debootstrap",
        why: "the package test installs into a fresh Debian root",
    },
    Package {
        name: "man-db",
        path: "/usr/bin/man",
        why: "the package test renders the man page",
    },
    Package {
        name: "gzip",
        path: "/usr/bin/gzip",
        why: "the package's man page is compressed",
    },
    Package {
        name: "systemd",
        path: "/usr/bin/systemd-analyze",
        why: "`systemd-analyze verify` of the unit",
    },
    Package {
        name: "stress-ng",
        path: "/usr/bin/stress-ng",
        why: "saturating the cores in the soak and its short CI version",
    },
    Package {
        name: "iptables",
        path: "/usr/sbin/iptables",
        why: "the doctor test breaks firewall rules in a lab namespace",
    },
    Package {
        name: "openssh-client",
        path: "/usr/bin/ssh",
        why: "doctor's password-less ssh check",
    },
    Package {
        name: "strongswan-charon",
        path: "/usr/lib/ipsec/charon",
        why: "real AP IKEv2 initiators and the servers' responders in the AP lab",
    },
    Package {
        name: "strongswan-swanctl",
        path: "/usr/sbin/swanctl",
        why: "loading the AP lab's IKE configs over vici",
    },
    Package {
        name: "libcharon-extra-plugins",
        path: "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so",
        why: "ESP in userspace (kernel-libipsec): this kernel has no XFRM ESP",
    },
    Package {
        name: "libstrongswan-standard-plugins",
        path: "/usr/lib/ipsec/plugins/libstrongswan-openssl.so",
        why: "charon's crypto (openssl plugin) in the AP lab",
    },
    Package {
        name: "mosquitto",
        path: "/usr/sbin/mosquitto",
        why: "the servers' MQTT brokers in the AP lab",
    },
    Package {
        name: "mosquitto-clients",
        path: "/usr/bin/mosquitto_sub",
        why: "the APs' MQTT clients in the AP lab",
    },
    Package {
        name: "binutils",
        path: "/usr/bin/strip",
        why: "cargo-deb strips the packaged binary",
    },
];

/// Cargo subcommands installed with `cargo install NAME --version V --locked`.
struct CargoTool {
    name: &'static str,
    version: &'static str,
    why: &'static str,
}

const CARGO_TOOLS: &[CargoTool] = &[
    CargoTool {
        name: "cargo-deb",
        version: "3.6.3",
        why: "builds the Debian package",
    },
    CargoTool {
        name: "cargo-fuzz",
        version: "0.13.1",
        why: "the fuzz targets",
    },
];

const BPF_LINKER_INSTALL: &str =
    "LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker --version 0.13.0 --locked --no-default-features --features llvm-22";

fn on_path(binary: &str) -> bool {
    env::split_paths(&path_with_cargo_bin()).any(|dir| dir.join(binary).is_file())
}

fn bpf_linker_present() -> bool {
    on_path("bpf-linker")
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!("{what} needs root; run it as root (e.g. `sudo -E cargo xtask ...`)");
    }
    Ok(())
}

pub fn ensure() -> Result<()> {
    let missing: Vec<&Package> = PACKAGES
        .iter()
        .filter(|p| !Path::new(p.path).exists())
        .collect();
    let linker_missing = !bpf_linker_present();
    let tools_missing: Vec<&CargoTool> = CARGO_TOOLS.iter().filter(|t| !on_path(t.name)).collect();
    if missing.is_empty() && !linker_missing && tools_missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|p| p.name).collect();
    for p in &missing {
        eprintln!("xtask: missing {} ({}): {}", p.path, p.name, p.why);
    }
    if linker_missing {
        eprintln!("xtask: missing bpf-linker (links the XDP object)");
    }
    for tool in &tools_missing {
        eprintln!("xtask: missing {} ({})", tool.name, tool.why);
    }
    let debian =
        Path::new("/usr/bin/apt-get").exists() && Path::new("/etc/debian_version").exists();
    if !(is_root() && debian) {
        let mut steps = Vec::new();
        if !names.is_empty() {
            steps.push(format!("apt-get install {}", names.join(" ")));
        }
        if linker_missing || !names.is_empty() {
            steps.push(BPF_LINKER_INSTALL.to_string());
        }
        for tool in &tools_missing {
            steps.push(format!(
                "cargo install {} --version {} --locked",
                tool.name, tool.version
            ));
        }
        bail!(
            "prerequisites missing; on Debian 12 install them as root with:\n  {}",
            steps.join("\n  ")
        );
    }
    if !names.is_empty() {
        eprintln!("xtask: installing {}", names.join(" "));
        run(Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&names)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        disable_system_units();
    }
    if !bpf_linker_present() {
        eprintln!("xtask: installing bpf-linker (about a minute)");
        run(Command::new(cargo())
            .args([
                "install",
                "bpf-linker",
                "--version",
                "0.13.0",
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"))?;
    }
    for tool in CARGO_TOOLS.iter().filter(|t| !on_path(t.name)) {
        eprintln!("xtask: installing {} (about a minute)", tool.name);
        run(Command::new(cargo()).args([
            "install",
            tool.name,
            "--version",
            tool.version,
            "--locked",
        ]))?;
    }
    Ok(())
}

/// Services Debian enables when their package is installed; every daemon
/// of the lab runs inside the lab's namespaces instead, so the machine's
/// own copies are stopped and disabled (best effort: there may be no
/// running systemd).
const SYSTEM_UNITS: &[&str] = &["strongswan-starter", "strongswan", "mosquitto"];

fn disable_system_units() {
    for unit in SYSTEM_UNITS {
        let _ = Command::new("systemctl")
            .args(["disable", "--now", unit])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

const DOCKER_SOCKET: &str = "/var/run/docker.sock";
const DOCKERD_LOG: &str = "/var/log/wimark-ha-dockerd.log";

fn dockerd_answers() -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(DOCKER_SOCKET) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    if stream.write_all(b"GET /_ping HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.ends_with("OK")
}

/// Starts dockerd in the background when it is not answering (the tests need
/// a real one). Lab containers use `network_mode: none`, so it runs without
/// its bridge and without touching iptables.
pub fn ensure_dockerd() -> Result<()> {
    if dockerd_answers() {
        return Ok(());
    }
    require_root("starting dockerd")?;
    eprintln!("xtask: starting dockerd in the background (log: {DOCKERD_LOG})");
    let log = std::fs::File::create(DOCKERD_LOG)?;
    Command::new("setsid")
        .args([
            "-f",
            "/usr/sbin/dockerd",
            "--iptables=false",
            "--bridge=none",
        ])
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !dockerd_answers() {
        if std::time::Instant::now() > deadline {
            bail!("dockerd did not answer on {DOCKER_SOCKET} within 60 s; see {DOCKERD_LOG}");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Ok(())
}
