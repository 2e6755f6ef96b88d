//! Real containers for the role-switch tests: a FROM-scratch image with
//! Debian's static busybox (nothing can be pulled here), and stacks of
//! containers labelled as docker-compose labels them, removed on drop.

use std::{process::Command, sync::OnceLock};

use anyhow::{bail, Context as _, Result};

pub const IMAGE: &str = "wimark-ha-lab:busybox";

fn docker() -> Command {
    docker_on(None)
}

/// The Docker client, talking to `host` (a `unix://` socket) or the default.
pub fn docker_on(host: Option<&str>) -> Command {
    // Debian's client matches its daemon; buildkit is not needed.
    let binary = if std::path::Path::new("/usr/bin/docker").exists() {
        "/usr/bin/docker"
    } else {
        "docker"
    };
    let mut command = Command::new(binary);
    command.env("DOCKER_BUILDKIT", "0");
    if let Some(host) = host {
        command.args(["-H", host]);
    }
    command
}

fn run(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Fails with what is missing unless dockerd answers.
pub fn require_dockerd() {
    let answer = docker()
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    let ok = answer.as_ref().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "dockerd is not answering on /var/run/docker.sock (`cargo xtask test` starts it): {answer:?}");
}

/// The lab image, built once per test process.
pub fn image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| build_image(None));
    IMAGE
}

/// Builds the lab image on the dockerd at `host` (default: the shared one).
pub fn build_image(host: Option<&str>) {
    {
        let dir = std::env::temp_dir().join(format!("wimark-ha-image-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("image dir");
        std::fs::copy("/bin/busybox", dir.join("busybox"))
            .expect("/bin/busybox (Debian package busybox-static)");
        // Also as /bin/sh: `docker create --health-cmd` runs its check
        // through the shell.
        std::fs::write(
            dir.join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY busybox /bin/sh\nENTRYPOINT [\"/bin/busybox\"]\n\
             CMD [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 0.05; done\"]\n",
        )
        .expect("Dockerfile");
        run(docker_on(host).args(["build", "-q", "-t", IMAGE]).arg(&dir))
            .expect("building the lab image");
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// Containers of one compose project, created but not started.
pub struct Stack {
    pub project: String,
    pub names: Vec<String>,
    host: Option<String>,
}

impl Stack {
    /// `count` services; `command` overrides the image's for the first one.
    pub fn create(project: &str, count: usize, first_command: Option<&[&str]>) -> Result<Self> {
        Self::create_on(None, project, count, first_command)
    }

    /// The same on the dockerd at `host`, whose lab image must exist.
    pub fn create_on(
        host: Option<&str>,
        project: &str,
        count: usize,
        first_command: Option<&[&str]>,
    ) -> Result<Self> {
        Self::create_on_with(host, project, count, &[], first_command)
    }

    /// The same; `first_options` go to `docker create` of the first one.
    fn create_on_with(
        host: Option<&str>,
        project: &str,
        count: usize,
        first_options: &[&str],
        first_command: Option<&[&str]>,
    ) -> Result<Self> {
        let image = if host.is_some() { IMAGE } else { image() };
        let mut names = Vec::new();
        for i in 0..count {
            let name = format!("{project}-svc{i}");
            let mut command = docker_on(host);
            command
                .args(["create", "--name", &name, "--network", "none", "--label"])
                .arg(format!("com.docker.compose.project={project}"))
                .args(["--label", &format!("com.docker.compose.service=svc{i}")]);
            if i == 0 {
                command.args(first_options);
            }
            command.arg(image);
            if let (0, Some(args)) = (i, first_command) {
                command.args(args);
            }
            run(&mut command)?;
            names.push(name);
        }
        Ok(Self {
            project: project.to_string(),
            names,
            host: host.map(str::to_string),
        })
    }

    /// `count` services whose first has a Docker healthcheck (healthy
    /// while /healthy exists: `break_health` removes it), checked every
    /// 200 ms, unhealthy after one failure.
    pub fn create_healthchecked(project: &str, count: usize) -> Result<Self> {
        let stack = Self::create_on_with(
            None,
            project,
            count,
            &[
                "--health-cmd",
                "/bin/busybox test -f /healthy",
                "--health-interval",
                "200ms",
                "--health-retries",
                "1",
            ],
            Some(&[
                "sh",
                "-c",
                "trap 'exit 0' TERM; : > /healthy; while true; do sleep 0.05; done",
            ]),
        )?;
        Ok(stack)
    }

    /// The first service's healthcheck fails from now on.
    pub fn break_health(&self) -> Result<()> {
        run(docker_on(self.host.as_deref()).args(["exec", &self.names[0], "/bin/busybox", "rm", "-f", "/healthy"]))
            .map(|_| ())
    }

    /// Names of the containers that are running now.
    pub fn running(&self) -> Vec<String> {
        self.names
            .iter()
            .filter(|name| {
                run(docker_on(self.host.as_deref()).args([
                    "inspect",
                    "--format",
                    "{{.State.Running}}",
                    name,
                ]))
                .map(|s| s == "true")
                .unwrap_or(false)
            })
            .cloned()
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let mut command = docker_on(self.host.as_deref());
        command.args(["rm", "-f"]).args(&self.names);
        let _ = command.output();
    }
}

/// A real docker-compose project (Debian's docker-compose 1.29): its file in
/// `dir`, containers created by `up --no-start`, removed by `down` on drop.
pub struct ComposeProject {
    pub dir: std::path::PathBuf,
    pub project: String,
}

impl ComposeProject {
    pub fn create(dir: &std::path::Path, project: &str, yaml: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("docker-compose.yml"), yaml)?;
        let made = Self {
            dir: dir.to_path_buf(),
            project: project.to_string(),
        };
        made.compose(&["up", "--no-start"])?;
        Ok(made)
    }

    pub fn compose(&self, args: &[&str]) -> Result<()> {
        let output = Command::new("docker-compose")
            .current_dir(&self.dir)
            .args(["-p", &self.project])
            .args(args)
            .output()
            .context("docker-compose (Debian package docker-compose)")?;
        if !output.status.success() {
            bail!(
                "docker-compose -p {} {args:?}: {}",
                self.project,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// `docker inspect` of the service's container, formatted by `format`.
    pub fn inspect(&self, service: &str, format: &str) -> Result<String> {
        run(docker().args([
            "inspect",
            "--format",
            format,
            &format!("{}_{service}_1", self.project),
        ]))
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "--timeout", "1"]);
    }
}

/// A dockerd of the test's own (own socket, data and exec roots), for
/// stopping and starting without disturbing the shared one.
pub struct OwnDockerd {
    pub dir: std::path::PathBuf,
}

impl OwnDockerd {
    pub fn start(dir: &std::path::Path) -> Result<Self> {
        let own = Self {
            dir: dir.to_path_buf(),
        };
        own.up()?;
        build_image(Some(&own.host()));
        Ok(own)
    }

    pub fn socket(&self) -> std::path::PathBuf {
        self.dir.join("docker.sock")
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    pub fn up(&self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))?;
        Command::new("setsid")
            .args([
                "-f",
                "/usr/sbin/dockerd",
                "--bridge=none",
                "--iptables=false",
            ])
            .arg(format!("--data-root={}", self.dir.join("data").display()))
            .arg(format!("--exec-root={}", self.dir.join("exec").display()))
            .arg(format!(
                "--pidfile={}",
                self.dir.join("docker.pid").display()
            ))
            .arg(format!("--host={}", self.host()))
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !docker_on(Some(&self.host()))
            .args(["version"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
        {
            if std::time::Instant::now() > deadline {
                bail!("own dockerd did not answer in 30 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Ok(())
    }

    /// Stops it (SIGTERM) and waits until it is gone.
    pub fn down(&self) {
        self.signal_and_wait(libc::SIGTERM);
    }

    /// Kills it (SIGKILL: no clean-up of its own) and waits until it is gone.
    pub fn kill(&self) {
        self.signal_and_wait(libc::SIGKILL);
    }

    fn signal_and_wait(&self, signal: i32) {
        let Ok(pid) = std::fs::read_to_string(self.dir.join("docker.pid")) else {
            return;
        };
        let Ok(pid) = pid.trim().parse::<i32>() else {
            return;
        };
        // SAFETY: plain kill(2) of the dockerd we started.
        unsafe { libc::kill(pid, signal) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::path::Path::new(&format!("/proc/{pid}")).exists()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for OwnDockerd {
    fn drop(&mut self) {
        self.down();
        // A killed dockerd leaves the bind mount of its data root behind (a
        // clean stop removes it): without this the directory could not be
        // removed and the mount would outlive the test.
        unmount_below(&self.dir);
    }
}

/// Lazily unmounts every mount point at or below `dir`, deepest first.
fn unmount_below(dir: &std::path::Path) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| std::path::Path::new(point).starts_with(dir))
        .collect();
    points.sort_by_key(|point| std::cmp::Reverse(point.len()));
    for point in points {
        let _ = Command::new("umount").args(["-l", point]).status();
    }
}
