//! Hooks and the notify script: the vendor script's side duties, done
//! right — argv without a shell, awaited with a timeout, every outcome
//! reported (exit code, output), never fire-and-forget.
//!
//! Owns: running one hook or the notify script. Must not: decide whether a
//! failure blocks the switch (the role switcher does, from the config).

use std::time::{Duration, Instant};

use crate::config::{Hook, HookAction, NotifyConfig};

/// What happened when a hook ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub what: String,
    pub ok: bool,
    pub detail: String,
    pub took: Duration,
}

pub async fn run_hook(hook: &Hook) -> Outcome {
    let started = Instant::now();
    match &hook.action {
        HookAction::Remove(pattern) => {
            let (ok, detail) = remove_matching(pattern);
            Outcome {
                what: format!("remove {pattern}"),
                ok,
                detail,
                took: started.elapsed(),
            }
        }
        HookAction::Run(argv) => run(argv, hook.timeout, started).await,
    }
}

fn remove_matching(pattern: &str) -> (bool, String) {
    let paths = match glob::glob(pattern) {
        Ok(paths) => paths,
        Err(e) => return (false, format!("bad pattern: {e}")),
    };
    let mut removed = 0;
    let mut failures = Vec::new();
    for entry in paths {
        match entry {
            Ok(path) => match std::fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) => failures.push(format!("{}: {e}", path.display())),
            },
            Err(e) => failures.push(e.to_string()),
        }
    }
    if failures.is_empty() {
        (true, format!("{removed} file(s) removed"))
    } else {
        (false, failures.join("; "))
    }
}

/// Why a process did not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("could not start {program}: {source}")]
    Start {
        program: String,
        source: std::io::Error,
    },
    #[error("timed out after {0:?} (killed)")]
    TimedOut(Duration),
}

/// The one process runner of the daemon's hooks (the role hooks, the
/// notify script, the AP recovery's IKE hook): `argv` without a shell,
/// `input` on its stdin (none: /dev/null), its output collected, killed at
/// `timeout`. A process that does not read its input never blocks us.
pub async fn run_process(
    argv: &[String],
    input: Option<&[u8]>,
    timeout: Duration,
) -> Result<std::process::Output, ProcessError> {
    let kept = run_process_keeping_output(argv, input, timeout).await?;
    match kept.status {
        Some(status) => Ok(std::process::Output {
            status,
            stdout: kept.stdout,
            stderr: kept.stderr,
        }),
        None => Err(ProcessError::TimedOut(timeout)),
    }
}

/// What a process printed, and how it ended.
#[derive(Debug, Default)]
pub struct KeptOutput {
    /// `None`: killed, at the timeout or when told to stop.
    pub status: Option<std::process::ExitStatus>,
    /// Killed because the caller's `stop` came first.
    pub stopped: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// How long the output of a process that ended is still read: a child it
/// left behind may hold the pipes open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

/// [`run_process`], keeping what the process printed before a kill at
/// `timeout` (a hook that reports as it goes, such as `ike-initiate`, has
/// then said how far it got).
pub async fn run_process_keeping_output(
    argv: &[String],
    input: Option<&[u8]>,
    timeout: Duration,
) -> Result<KeptOutput, ProcessError> {
    run_process_keeping_output_until(argv, input, timeout, std::future::pending()).await
}

/// The same, and the process is killed (its output kept) as soon as `stop`
/// completes.
pub async fn run_process_keeping_output_until(
    argv: &[String],
    input: Option<&[u8]>,
    timeout: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> Result<KeptOutput, ProcessError> {
    use tokio::io::AsyncWriteExt as _;
    let deadline = tokio::time::Instant::now() + timeout;
    let start_error = |source| ProcessError::Start {
        program: argv.first().cloned().unwrap_or_default(),
        source,
    };
    let program = argv.first().ok_or_else(|| {
        start_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "empty argv",
        ))
    })?;
    let mut child = tokio::process::Command::new(program)
        .args(&argv[1..])
        .kill_on_drop(true)
        .stdin(match input {
            Some(_) => std::process::Stdio::piped(),
            None => std::process::Stdio::null(),
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(start_error)?;
    // Both pipes are read while the input is written and the process runs:
    // one that prints before it has read all its input never deadlocks us.
    let (chunks_tx, mut chunks) = tokio::sync::mpsc::unbounded_channel();
    let readers = [
        child.stdout.take().map(|pipe| forward(pipe, Pipe::Stdout, chunks_tx.clone())),
        child.stderr.take().map(|pipe| forward(pipe, Pipe::Stderr, chunks_tx.clone())),
    ];
    drop(chunks_tx);
    let writer = match (input, child.stdin.take()) {
        (Some(input), Some(mut stdin)) => {
            let input = input.to_vec();
            // A broken pipe is the hook's business (it did not read).
            Some(tokio::spawn(async move {
                let _ = stdin.write_all(&input).await;
            }))
        }
        _ => None,
    };
    tokio::pin!(stop);
    let mut stopped = false;
    let waited = tokio::select! {
        waited = tokio::time::timeout_at(deadline, child.wait()) => waited.ok(),
        () = &mut stop => {
            stopped = true;
            None
        }
    };
    let status = match waited {
        Some(status) => Some(status.map_err(start_error)?),
        None => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            None
        }
    };
    let mut kept = KeptOutput {
        status,
        stopped,
        ..KeptOutput::default()
    };
    let drain_until = tokio::time::Instant::now() + DRAIN_AFTER_EXIT;
    while let Ok(Some((pipe, chunk))) = tokio::time::timeout_at(drain_until, chunks.recv()).await {
        match pipe {
            Pipe::Stdout => kept.stdout.extend_from_slice(&chunk),
            Pipe::Stderr => kept.stderr.extend_from_slice(&chunk),
        }
    }
    for task in readers.into_iter().flatten().chain(writer) {
        task.abort();
    }
    Ok(kept)
}

#[derive(Clone, Copy)]
enum Pipe {
    Stdout,
    Stderr,
}

/// Sends what `pipe` yields, chunk by chunk, until its end.
fn forward(
    mut pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    which: Pipe,
    chunks: tokio::sync::mpsc::UnboundedSender<(Pipe, Vec<u8>)>,
) -> tokio::task::JoinHandle<()> {
    use tokio::io::AsyncReadExt as _;
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match pipe.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if chunks.send((which, buffer[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// The last `chars` characters of a process's output, trimmed.
pub fn output_tail(bytes: &[u8], chars: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let skip = text.chars().count().saturating_sub(chars);
    text.chars().skip(skip).collect()
}

async fn run(argv: &[String], timeout: Duration, started: Instant) -> Outcome {
    let what = argv.join(" ");
    let (ok, detail) = match run_process(argv, None, timeout).await {
        Err(e) => (false, e.to_string()),
        Ok(output) => (
            output.status.success(),
            format!(
                "{}; stdout: {:?}; stderr: {:?}",
                output.status,
                output_tail(&output.stdout, 400),
                output_tail(&output.stderr, 400)
            ),
        ),
    };
    Outcome {
        what,
        ok,
        detail,
        took: started.elapsed(),
    }
}

/// keepalived's notify convention: `SCRIPT INSTANCE NAME STATE PRIORITY`, or
/// `SCRIPT GROUP NAME STATE PRIORITY` for a sync group.
pub async fn notify(
    config: &NotifyConfig,
    kind: &str,
    name: &str,
    state: &str,
    priority: u8,
) -> Outcome {
    let argv = [
        config.script.display().to_string(),
        kind.to_string(),
        name.to_string(),
        state.to_string(),
        priority.to_string(),
    ];
    run(&argv, config.timeout, Instant::now()).await
}
