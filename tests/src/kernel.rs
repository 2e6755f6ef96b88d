//! The real kernel object, loaded but not attached, fed frames through
//! BPF_PROG_TEST_RUN (aya's `TestRun`): no NIC, no namespace needed.

use anyhow::{Context as _, Result};
use aya::{programs::Xdp, Ebpf, TestRun as _, TestRunOptions};
use wimark_ha::monitor;
use wimark_ha_common::abi::{Counter, TrafficCounter, PROGRAM_NAME};

pub const XDP_PASS: u32 = 2;

pub struct KernelMonitor {
    pub ebpf: Ebpf,
}

/// The result of one test run.
pub struct Run {
    pub return_value: u32,
    /// Average time per run, as the kernel measured it.
    pub duration_ns: u128,
    pub data_out: Vec<u8>,
}

impl KernelMonitor {
    /// Loads the embedded object; fails with what is missing (root, object).
    pub fn load() -> Result<Self> {
        crate::require_root("loading the XDP object");
        let ebpf = monitor::load(None).context("loading the embedded XDP object")?;
        Ok(Self { ebpf })
    }

    fn program(&self, name: &str) -> Result<&Xdp> {
        let program = self
            .ebpf
            .program(name)
            .with_context(|| format!("no program {name}"))?;
        Ok(program.try_into()?)
    }

    /// Runs the monitor over `frame` `repeat` times.
    pub fn run(&self, frame: &[u8], repeat: u32) -> Result<Run> {
        run_program(self.program(PROGRAM_NAME)?, frame, repeat)
    }

    pub fn counters(&self) -> Result<[TrafficCounter; Counter::COUNT as usize]> {
        Ok(monitor::read_counters(&self.ebpf)?)
    }

    /// Total packets over the traffic counters (not the events lost).
    pub fn total_packets(&self) -> Result<u64> {
        let counters = self.counters()?;
        Ok(Counter::ALL
            .iter()
            .filter(|c| c.is_traffic())
            .map(|c| counters[*c as usize].packets)
            .sum())
    }
}

pub fn run_program(program: &Xdp, frame: &[u8], repeat: u32) -> Result<Run> {
    let mut data_out = vec![0u8; frame.len() + 256];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut data_out),
            repeat,
            ..Default::default()
        })
        .context("BPF_PROG_TEST_RUN (kernel support for XDP test runs is required)")?;
    data_out.truncate(result.data_size_out as usize);
    Ok(Run {
        return_value: result.return_value,
        duration_ns: result.duration.as_nanos(),
        data_out,
    })
}
