//! What a process has used: CPU time, resident memory, allocations.

use std::time::Duration;

/// A reading of one process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User + system CPU time.
    pub cpu: Duration,
    /// Resident memory now, in bytes.
    pub rss: u64,
    /// Allocations so far.
    pub allocations: u64,
}

impl Usage {
    /// This process, now.
    pub fn of_self() -> Self {
        Self {
            cpu: cpu_of(libc::RUSAGE_SELF),
            rss: resident_bytes(),
            allocations: crate::alloc::count(),
        }
    }

    /// `key=value` form, for a child to report to the driver.
    pub fn encode(&self) -> String {
        format!(
            "cpu_ns={} rss={} allocs={}",
            self.cpu.as_nanos(),
            self.rss,
            self.allocations
        )
    }

    /// Parses [`Usage::encode`].
    pub fn decode(line: &str) -> anyhow::Result<Self> {
        let mut usage = Self::default();
        for pair in line.split_whitespace() {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("bad usage line {line:?}"))?;
            let value: u64 = value.parse()?;
            match key {
                "cpu_ns" => usage.cpu = Duration::from_nanos(value),
                "rss" => usage.rss = value,
                "allocs" => usage.allocations = value,
                _ => anyhow::bail!("unknown usage key {key:?} in {line:?}"),
            }
        }
        Ok(usage)
    }
}

/// CPU time (user + system) of `who` (`RUSAGE_SELF` or `RUSAGE_CHILDREN`).
pub fn cpu_of(who: libc::c_int) -> Duration {
    let usage = rusage(who);
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Peak resident memory of terminated, waited-for children and their descendants, in bytes.
pub fn children_peak_rss() -> u64 {
    rusage(libc::RUSAGE_CHILDREN).ru_maxrss as u64 * 1024
}

/// Peak resident memory of this process, in bytes.
pub fn self_peak_rss() -> u64 {
    rusage(libc::RUSAGE_SELF).ru_maxrss as u64 * 1024
}

fn rusage(who: libc::c_int) -> libc::rusage {
    // SAFETY: getrusage fills the zeroed struct it is given.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    }
}

/// Current resident memory of this process, from `/proc/self/statm`.
fn resident_bytes() -> u64 {
    let pages: u64 = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
    pages * page
}
