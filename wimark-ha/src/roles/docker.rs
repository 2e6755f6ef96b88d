//! The Docker calls of a switch: listing a stack's containers, starting one
//! until it runs (and is healthy), and telling "already so" (304) from a
//! failure.
//!
//! Owns: those calls and their retries. Must not: choose what to start or
//! stop (the switcher does, in `depends_on` order).

use super::*;

/// Docker's "304 Not Modified": the container already is as asked
/// (started, or stopped), which is success for an idempotent switch.
pub(super) fn not_modified(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 304,
            ..
        }
    )
}

/// Every container of a stack, running or not, with its labels.
pub async fn list(docker: &Docker, selector: &Selector) -> Result<Vec<Member>, String> {
    let mut filters = HashMap::new();
    filters.insert("label".to_string(), selector.label_filters());
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| format!("listing containers: {e}"))?;
    Ok(containers
        .into_iter()
        .filter_map(|c| {
            let name = c.names.and_then(|n| n.first().cloned()).unwrap_or_default();
            Some(Member {
                id: c.id?,
                name: name.trim_start_matches('/').to_string(),
                labels: c.labels.unwrap_or_default(),
            })
        })
        .collect())
}

/// Starts a container and waits until it runs (and is healthy, where it has
/// a healthcheck); one that exits is started again, up to START_ATTEMPTS.
/// `Some(problem)` if it never got there.
pub(super) async fn start_until_ready(
    docker: &Docker,
    id: &str,
    name: &str,
    timeout: Duration,
) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let mut attempts = 0;
    loop {
        attempts += 1;
        if let Err(e) = docker
            .start_container(id, None::<StartContainerOptions>)
            .await
        {
            if !not_modified(&e) {
                if attempts >= START_ATTEMPTS {
                    return Some(format!("starting {name}: {e}"));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        loop {
            let inspect = match docker.inspect_container(id, None).await {
                Ok(i) => i,
                Err(e) => return Some(format!("inspecting {name}: {e}")),
            };
            let state = inspect.state.unwrap_or_default();
            let running = state.running.unwrap_or(false);
            let health = state.health.and_then(|h| h.status);
            use bollard::models::HealthStatusEnum as H;
            match (running, health) {
                (true, None | Some(H::EMPTY) | Some(H::NONE) | Some(H::HEALTHY)) => return None,
                (true, Some(H::STARTING)) | (true, Some(H::UNHEALTHY)) => {}
                (false, _) => {
                    let code = state.exit_code.unwrap_or_default();
                    if attempts >= START_ATTEMPTS {
                        return Some(format!(
                            "{name} exited (code {code}) after {attempts} starts"
                        ));
                    }
                    break; // start it again
                }
            }
            if Instant::now() > deadline {
                return Some(format!("{name} not ready within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_docker_s_304_counts_as_already_done() {
        let status = |status_code| bollard::errors::Error::DockerResponseServerError {
            status_code,
            message: "container already started".to_string(),
        };
        assert!(not_modified(&status(304)));
        assert!(!not_modified(&status(500)));
        // A message that mentions 304 is not the status.
        assert!(!not_modified(
            &bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                message: "no such container: app-304".to_string(),
            }
        ));
    }
}
