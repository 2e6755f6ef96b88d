//! A real etcd (Debian's etcd-server, v3 API) for the witness labs: one
//! member, or a cluster of several, each member in a namespace the test
//! created, its data in a scratch directory, killed and removed on drop.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::{daemon::wait_until, lab::in_netns, Scratch};

struct Member {
    name: String,
    /// `None` once killed (`kill_leader`).
    child: Option<Child>,
    namespace: String,
    endpoint: String,
    data: Scratch,
}

pub struct Etcd {
    members: Vec<Member>,
    /// The client URLs of every member, comma-separated (as etcdctl and
    /// the daemon's `endpoints` take them): `http://address:2379`, or
    /// `https://` with TLS.
    pub endpoint: String,
    /// etcdctl's TLS flags (CA and client certificate), with TLS.
    tls_flags: Vec<String>,
}

/// A lab CA and the certificates a TLS etcd and its clients use, made with
/// openssl in a scratch directory (EC P-256, valid two days).
pub struct EtcdTls {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate signed by the CA (etcd's `--client-cert-auth`).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    _dir: Scratch,
}

impl EtcdTls {
    /// A CA named `tag`, a server certificate for `server_ip` (its subject
    /// alternative name: what a client checks) and a client certificate.
    pub fn generate(tag: &str, server_ip: &str) -> Result<Self> {
        let dir = Scratch::new(&format!("etcd-tls-{tag}"));
        let at = |name: &str| dir.0.join(name);
        let openssl = |args: &[&str]| -> Result<()> {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(&dir.0)
                .output()
                .context("openssl (Debian's openssl package)")?;
            if !output.status.success() {
                bail!(
                    "openssl {args:?}: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            Ok(())
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=wimark-ha lab CA {tag}"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat(),
        )?;
        for (name, extensions) in [
            (
                "server",
                format!("subjectAltName=IP:{server_ip}\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature\nbasicConstraints=CA:FALSE\n"),
            ),
            (
                "client",
                "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\nbasicConstraints=CA:FALSE\n".to_string(),
            ),
        ] {
            let (key, csr, cert, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            std::fs::write(at(&ext), extensions).context("extensions file")?;
            openssl(
                &[
                    &["req"][..],
                    &ec,
                    &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN=wimark-ha lab {name}")],
                ]
                .concat(),
            )?;
            openssl(&[
                "x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", &ext, "-out", &cert,
            ])?;
        }
        Ok(Self {
            ca: at("ca.pem"),
            server_cert: at("server.pem"),
            server_key: at("server.key"),
            client_cert: at("client.pem"),
            client_key: at("client.key"),
            _dir: dir,
        })
    }

    /// The daemon's `[witness] tls` line with the client certificate.
    pub fn config_line(&self) -> String {
        format!(
            "tls = {{ ca = \"{}\", cert = \"{}\", key = \"{}\" }}",
            self.ca.display(),
            self.client_cert.display(),
            self.client_key.display()
        )
    }
}

/// Fails with what is missing when etcd is not installed.
pub fn require_etcd() {
    for (path, package) in [
        ("/usr/bin/etcd", "etcd-server"),
        ("/usr/bin/etcdctl", "etcd-client"),
    ] {
        assert!(
            std::path::Path::new(path).exists(),
            "{path} is missing: the witness labs need Debian's {package} (cargo xtask prereqs installs it)"
        );
    }
}

impl Etcd {
    /// One member named `name` listening on `address` in `namespace`.
    pub fn start(namespace: &str, name: &str, address: &str) -> Result<Self> {
        Self::cluster(&[(namespace, name, address)], None)
    }

    /// A cluster of one member per `(namespace, name, address)`, all
    /// started before any is asked (a member answers once a quorum is up).
    /// With `tls`, clients speak TLS and must show a certificate of its CA
    /// (the members among themselves stay on plain http).
    pub fn cluster(members: &[(&str, &str, &str)], tls: Option<&EtcdTls>) -> Result<Self> {
        require_etcd();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let initial_cluster = members
            .iter()
            .map(|(_, name, address)| format!("{name}=http://{address}:2380"))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Self {
            members: Vec::new(),
            endpoint: members
                .iter()
                .map(|(_, _, address)| format!("{scheme}://{address}:2379"))
                .collect::<Vec<_>>()
                .join(","),
            tls_flags: tls.map_or_else(Vec::new, |tls| {
                [
                    ("--cacert", &tls.ca),
                    ("--cert", &tls.client_cert),
                    ("--key", &tls.client_key),
                ]
                .iter()
                .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
                .collect()
            }),
        };
        for (namespace, name, address) in members {
            etcd.members
                .push(Member::start(namespace, name, address, &initial_cluster, tls)?);
        }
        wait_until(Duration::from_secs(30), "etcd healthy", || {
            etcd.etcdctl(&["endpoint", "health"]).is_ok()
        })
        .map_err(|e| anyhow::anyhow!("{e}\n{}", etcd.log()))?;
        Ok(etcd)
    }

    /// The client URLs as a TOML list's items: `"http://a:2379", "http://b:2379"`.
    pub fn endpoints_toml(&self) -> String {
        self.endpoint
            .split(',')
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn log(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                format!(
                    "--- etcd {}:\n{}",
                    m.name,
                    std::fs::read_to_string(m.data.0.join("etcd.log")).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `etcdctl` against the members still running, from the first one's
    /// namespace (they share a LAN); stdout.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String> {
        let live: Vec<&Member> = self.members.iter().filter(|m| m.child.is_some()).collect();
        let Some(first) = live.first() else {
            bail!("no etcd member is running");
        };
        let mut argv = vec![
            "--endpoints".to_string(),
            live.iter()
                .map(|m| m.endpoint.as_str())
                .collect::<Vec<_>>()
                .join(","),
            "--command-timeout".to_string(),
            "2s".to_string(),
        ];
        argv.extend(self.tls_flags.iter().cloned());
        argv.extend(args.iter().map(|s| s.to_string()));
        let output = in_netns(&first.namespace, move || {
            Command::new("/usr/bin/etcdctl")
                .env("ETCDCTL_API", "3")
                .args(&argv)
                .output()
        })?
        .context("etcdctl")?;
        if !output.status.success() {
            bail!(
                "etcdctl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The value of `key` (empty when absent).
    pub fn get(&self, key: &str) -> Result<String> {
        let out = self.etcdctl(&["get", key, "--print-value-only"])?;
        Ok(out.trim().to_string())
    }

    /// The name of the member that leads the cluster now.
    pub fn leader(&self) -> Result<String> {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"])?;
        let statuses: Vec<serde_json::Value> =
            serde_json::from_str(&out).with_context(|| format!("endpoint status: {out}"))?;
        // The entry whose member is the leader it reports.
        let leading = statuses.iter().find(|entry| {
            let status = &entry["Status"];
            status["leader"].as_u64().is_some() && status["leader"] == status["header"]["member_id"]
        });
        let endpoint = leading.and_then(|entry| entry["Endpoint"].as_str());
        self.members
            .iter()
            .find(|m| Some(m.endpoint.as_str()) == endpoint)
            .map(|m| m.name.clone())
            .with_context(|| format!("no member leads: {out}"))
    }

    /// Kills the leading member (SIGKILL): the others elect a new leader.
    /// Returns its name.
    pub fn kill_leader(&mut self) -> Result<String> {
        let leader = self.leader()?;
        let member = self
            .members
            .iter_mut()
            .find(|m| m.name == leader)
            .context("the leader is one of ours")?;
        if let Some(mut child) = member.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(leader)
    }

    /// Freezes every member (SIGSTOP): every request times out, as with a
    /// witness that is unreachable; `resume` thaws them.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: i32) {
        for child in self.members.iter().filter_map(|m| m.child.as_ref()) {
            // SAFETY: plain kill(2) on our child.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }
}

impl Member {
    fn start(
        namespace: &str,
        name: &str,
        address: &str,
        initial_cluster: &str,
        tls: Option<&EtcdTls>,
    ) -> Result<Self> {
        // Unique per lab: two tests of one binary run side by side.
        let data = Scratch::new(&format!("etcd-{namespace}-{name}"));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://{address}:2379");
        let peer = format!("http://{address}:2380");
        let mut args: Vec<String> = [
            "--name",
            name,
            "--data-dir",
            &data.0.join("data").display().to_string(),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            initial_cluster,
            "--initial-cluster-state",
            "new",
            "--log-level",
            "warn",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(tls) = tls {
            for (flag, path) in [
                ("--cert-file", &tls.server_cert),
                ("--key-file", &tls.server_key),
                ("--trusted-ca-file", &tls.ca),
            ] {
                args.extend([flag.to_string(), path.display().to_string()]);
            }
            args.push("--client-cert-auth".to_string());
        }
        let log = std::fs::File::create(data.0.join("etcd.log")).context("etcd log")?;
        let child = in_netns(namespace, move || {
            Command::new("/usr/bin/etcd")
                .args(&args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
        })?
        .context("starting etcd")?;
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            namespace: namespace.to_string(),
            endpoint: client,
            data,
        })
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.resume();
        for mut child in self.members.iter_mut().filter_map(|m| m.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
