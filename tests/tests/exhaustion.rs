//! Exhaustion (issue 14, item 3): 1 100 half-open `GET /metrics` used to
//! take the daemon's 1 024 file descriptors — root's `status` then failed —
//! and a 200 MiB control request line grew it from 12 to 225 MB. The
//! metrics endpoint has a connection cap and a header deadline, the control
//! socket never shares its limits, and a request line is bounded.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    os::unix::net::UnixStream,
    time::{Duration, Instant},
};

use wimark_ha::{metrics::server, records::State};
use wimark_ha_tests::{
    daemon::{config, wait_until, Daemon, FAST},
    lab::{in_netns, two_servers},
};

const METRICS: &str = "127.0.0.1:9651";
const HALF_OPEN: usize = 1_100;

fn open_descriptors(daemon: &Daemon) -> usize {
    let pid = daemon.child.as_ref().map(|c| c.id()).expect("running");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn peak_rss_kib(daemon: &Daemon) -> u64 {
    let pid = daemon.child.as_ref().map(|c| c.id()).expect("running");
    wimark_ha_tests::soak::process_use(pid).peak_rss_kib
}

/// Room for 1 100 client sockets in this test process (root may raise it).
fn raise_descriptor_limit() {
    let limit = libc::rlimit {
        rlim_cur: 8192,
        rlim_max: 8192,
    };
    // SAFETY: setrlimit with a valid struct.
    let raised = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(raised, 0, "setrlimit(RLIMIT_NOFILE, 8192): {}", std::io::Error::last_os_error());
}

fn scrape(namespace: &str) -> std::io::Result<String> {
    wimark_ha_tests::daemon::scrape_metrics(namespace, METRICS)
}

#[test]
fn half_open_metrics_requests_never_take_the_control_socket_or_the_descriptors() {
    wimark_ha_tests::require_root("the exhaustion lab (netns)");
    let (_lab, a, _b) = two_servers(true).expect("lab");
    let metrics = format!("[metrics]\nlisten = \"{METRICS}\"\n");
    let daemon = Daemon::start(&a, "a", |s| config(s, 200, &format!("{FAST}\n\n{metrics}")))
        .expect("A");
    wait_until(Duration::from_secs(5), "A MASTER", || daemon.state() == Some(State::Master))
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    let baseline = open_descriptors(&daemon);
    println!("descriptors open at rest: {baseline}");

    raise_descriptor_limit();
    let clients = in_netns(&a, || {
        (0..HALF_OPEN)
            .map(|_| {
                let mut stream = TcpStream::connect(METRICS)?;
                // The request line, never the end of the headers.
                stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")?;
                Ok(stream)
            })
            .collect::<std::io::Result<Vec<_>>>()
    })
    .expect("netns")
    .expect("1 100 connections to the metrics endpoint");
    thread_sleep(Duration::from_millis(500));

    // Root's control socket answers, the descriptors stay bounded.
    let asked = Instant::now();
    let status = daemon.status().unwrap_or_else(|e| panic!("status under the storm: {e:#}\n{}", daemon.log()));
    assert!(asked.elapsed() < Duration::from_secs(2), "status took {:?}", asked.elapsed());
    assert_eq!(status.instances[0].state, State::Master);
    let during = open_descriptors(&daemon);
    println!("descriptors open with {HALF_OPEN} half-open requests: {during}");
    assert!(
        during <= baseline + server::MAX_CONNECTIONS + 4,
        "{during} descriptors open (at rest {baseline}, cap {})",
        server::MAX_CONNECTIONS
    );

    // The capped ones are closed at their header deadline: a scraper gets in.
    thread_sleep(server::HEADER_TIMEOUT + Duration::from_secs(1));
    let text = scrape(&a).unwrap_or_else(|e| panic!("scrape after the header deadline: {e}\n{}", daemon.log()));
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let refused = text
        .lines()
        .find_map(|l| l.strip_prefix("wimark_ha_metrics_connections_refused_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no refused counter:\n{text}"));
    assert!(
        refused >= (HALF_OPEN - server::MAX_CONNECTIONS) as f64,
        "refused {refused} of {HALF_OPEN}"
    );
    drop(clients);
    // One line for the storm, not one per connection.
    let log = daemon.log();
    let lines = log.matches("connections open").count();
    assert!(
        (1..=2).contains(&lines),
        "{lines} log lines about the cap:\n{log}"
    );
}

#[test]
fn a_long_or_silent_control_request_is_refused_with_bounded_memory() {
    wimark_ha_tests::require_root("the exhaustion lab (netns)");
    let (_lab, a, _b) = two_servers(true).expect("lab");
    let daemon = Daemon::start(&a, "a", |s| config(s, 200, FAST)).expect("A");
    wait_until(Duration::from_secs(5), "A MASTER", || daemon.state() == Some(State::Master))
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    let before = peak_rss_kib(&daemon);

    // A 64 MiB line: answered after the bound, the rest unread.
    let mut stream = UnixStream::connect(&daemon.socket).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..64 {
        if stream.write_all(&chunk).is_err() {
            // The daemon answered and closed: the rest is not read.
            break;
        }
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(
        answer.contains("longer than"),
        "the answer to a 64 MiB line: {answer:?}"
    );
    let after = peak_rss_kib(&daemon);
    println!("peak RSS {before} KiB before, {after} KiB after a 64 MiB request line");
    assert!(after <= before + 4 * 1024, "peak RSS grew from {before} to {after} KiB");

    // A connection that never sends its line is closed, not kept.
    let mut silent = UnixStream::connect(&daemon.socket).expect("connect");
    silent.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let started = Instant::now();
    let mut nothing = Vec::new();
    let _ = silent.read_to_end(&mut nothing);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "a silent control connection was kept {:?}",
        started.elapsed()
    );
    // And the socket still serves.
    assert_eq!(daemon.state(), Some(State::Master));
}

fn thread_sleep(duration: Duration) {
    std::thread::sleep(duration);
}
