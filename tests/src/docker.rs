//! Real containers for the role-switch tests: a FROM-scratch image with
//! Debian's static busybox (nothing can be pulled here), and stacks of
//! containers labelled as docker-compose labels them, removed on drop.

use std::{process::Command, sync::OnceLock};

use anyhow::{bail, Context as _, Result};

pub const IMAGE: &str = "wimark-ha-lab:busybox";

fn docker() -> Command {
    // Debian's client matches its daemon; buildkit is not needed.
    let binary = if std::path::Path::new("/usr/bin/docker").exists() {
        "/usr/bin/docker"
    } else {
        "docker"
    };
    let mut command = Command::new(binary);
    command.env("DOCKER_BUILDKIT", "0");
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
    BUILT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("wimark-ha-image-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("image dir");
        std::fs::copy("/bin/busybox", dir.join("busybox"))
            .expect("/bin/busybox (Debian package busybox-static)");
        std::fs::write(
            dir.join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT [\"/bin/busybox\"]\n\
             CMD [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 0.05; done\"]\n",
        )
        .expect("Dockerfile");
        run(docker().args(["build", "-q", "-t", IMAGE]).arg(&dir)).expect("building the lab image");
        std::fs::remove_dir_all(&dir).ok();
    });
    IMAGE
}

/// Containers of one compose project, created but not started.
pub struct Stack {
    pub project: String,
    pub names: Vec<String>,
}

impl Stack {
    /// `count` services; `command` overrides the image's for the first one.
    pub fn create(project: &str, count: usize, first_command: Option<&[&str]>) -> Result<Self> {
        let image = image();
        let mut names = Vec::new();
        for i in 0..count {
            let name = format!("{project}-svc{i}");
            let mut command = docker();
            command
                .args(["create", "--name", &name, "--network", "none", "--label"])
                .arg(format!("com.docker.compose.project={project}"))
                .args(["--label", &format!("com.docker.compose.service=svc{i}")])
                .arg(image);
            if let (0, Some(args)) = (i, first_command) {
                command.args(args);
            }
            run(&mut command)?;
            names.push(name);
        }
        Ok(Self {
            project: project.to_string(),
            names,
        })
    }

    /// Names of the containers that are running now.
    pub fn running(&self) -> Vec<String> {
        self.names
            .iter()
            .filter(|name| {
                run(docker().args(["inspect", "--format", "{{.State.Running}}", name]))
                    .map(|s| s == "true")
                    .unwrap_or(false)
            })
            .cloned()
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let mut command = docker();
        command.args(["rm", "-f"]).args(&self.names);
        let _ = command.output();
    }
}
