//! Reads a process's CPU time (utime + stime from `/proc/PID/stat`) and resident memory
//! (VmRSS from `/proc/PID/status`), as described in proc(5). Linux only.

use std::io;
use std::time::Duration;

/// utime is field 14 and stime field 15 of `/proc/PID/stat` (1-based); counted from the
/// first field after the parenthesised command name (field 3), they are at 11 and 12.
const UTIME_AFTER_COMM: usize = 14 - 3;
const STIME_AFTER_COMM: usize = 15 - 3;

/// One reading of a process's resource use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// User + system CPU time consumed so far.
    pub cpu: Duration,
    /// Resident set size.
    pub rss_kib: u64,
}

/// Samples process `pid` now.
pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let ticks = parse_stat_cpu_ticks(&stat).ok_or_else(|| invalid("utime/stime in stat"))?;
    let rss_kib = parse_status_rss_kib(&status).ok_or_else(|| invalid("VmRSS in status"))?;
    Ok(ProcSample {
        cpu: ticks_to_duration(ticks, clock_ticks_per_second()?),
        rss_kib,
    })
}

/// utime + stime in clock ticks. The command name may contain spaces and parentheses, so
/// fields are counted from the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let utime: u64 = fields.get(UTIME_AFTER_COMM)?.parse().ok()?;
    let stime: u64 = fields.get(STIME_AFTER_COMM)?.parse().ok()?;
    Some(utime + stime)
}

/// The `VmRSS:` line of `/proc/PID/status`, in KiB.
pub fn parse_status_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => Some(value),
        Some(_) => None,
    }
}

/// Clock ticks to wall time.
pub fn ticks_to_duration(ticks: u64, per_second: u64) -> Duration {
    let per_second = per_second.max(1);
    let whole = ticks / per_second;
    let rest = ticks % per_second;
    Duration::from_secs(whole) + Duration::from_nanos(rest * 1_000_000_000 / per_second)
}

fn clock_ticks_per_second() -> io::Result<u64> {
    // SAFETY: sysconf only reads a configuration value; it has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks)
        .ok()
        .filter(|&t| t > 0)
        .ok_or_else(|| invalid("sysconf(_SC_CLK_TCK)"))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("cannot read {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with spaces and a parenthesis, as proc(5) warns about.
        let stat = "4242 (glint (x) y) S 1 4242 4242 0 -1 4194560 1234 0 12 0 \
                    750 125 0 0 20 0 9 0 123456 987654321 4321 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(875));
        assert_eq!(parse_stat_cpu_ticks("4242 (x) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn rss_comes_from_vmrss_in_kib() {
        let status = "Name:\tglint\nVmPeak:\t  99999 kB\nVmRSS:\t   51234 kB\nThreads:\t9\n";
        assert_eq!(parse_status_rss_kib(status), Some(51_234));
        assert_eq!(parse_status_rss_kib("Name:\tkthreadd\n"), None);
        assert_eq!(parse_status_rss_kib("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn ticks_convert_exactly() {
        assert_eq!(ticks_to_duration(250, 100), Duration::from_millis(2500));
        assert_eq!(ticks_to_duration(1, 3), Duration::from_nanos(333_333_333));
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0);
    }
}
