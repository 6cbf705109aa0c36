//! What the bench reads of processes and the machine from Linux's /proc:
//! CPU time (`/proc/<pid>/stat`), peak and current resident memory
//! (`/proc/<pid>/status`: VmHWM, VmRSS), the machine's CPU time
//! (`/proc/stat`), and which process listens on a loopback TCP port
//! (`/proc/net/tcp*` and `/proc/<pid>/fd`). Elsewhere every reading is
//! `None` and the report says "unknown".

use std::path::Path;

/// Clock ticks per second of the CPU times in /proc (USER_HZ, 100 on Linux).
pub const TICKS_PER_SECOND: f64 = 100.0;

/// A process's CPU time so far, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTicks {
    pub user: u64,
    /// In the kernel on the process's behalf: system calls, and page faults,
    /// which on a VM whose host backs guest memory lazily include the host's
    /// first touch of each page (docs/benchmarks.md).
    pub system: u64,
}

impl CpuTicks {
    pub fn total(self) -> u64 {
        self.user + self.system
    }
}

/// A process's user and system CPU time.
pub fn cpu_ticks(pid: u32) -> Option<CpuTicks> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ticks(&stat)
}

/// Fields 14 and 15 (utime, stime) of a `/proc/<pid>/stat` line. The command
/// name (field 2) is in parentheses and may hold spaces, so count after
/// the last `)`.
fn parse_stat_ticks(stat: &str) -> Option<CpuTicks> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) is index 11 here.
    Some(CpuTicks {
        user: fields.get(11)?.parse().ok()?,
        system: fields.get(12)?.parse().ok()?,
    })
}

/// Sets every thread of this process to niceness `nice`. Linux keeps it
/// per thread, and a thread started later takes its creator's, so this
/// covers the threads to come too (and processes started later).
pub fn set_own_niceness(nice: i32) -> std::io::Result<()> {
    for task in std::fs::read_dir("/proc/self/task")? {
        let tid = task?
            .file_name()
            .to_str()
            .and_then(|t| t.parse().ok())
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| {
                std::io::Error::other("a thread id in /proc/self/task is not a number")
            })?;
        rustix::process::setpriority_process(Some(tid), nice)?;
    }
    Ok(())
}

/// Peak resident set size (VmHWM) in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmHWM:")
}

/// Current resident set size (VmRSS) in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

fn status_field(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, name)
}

fn parse_status_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// The machine's CPU time over all cores: (busy, total) clock ticks.
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_ticks(&stat)
}

fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// The process listening on TCP `port` (IPv4 or IPv6), if this user can see it.
pub fn listening_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            inodes.extend(listening_inodes(&text, port));
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let own = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        if owns_socket(&entry.path().join("fd"), &wanted) {
            return Some(pid);
        }
    }
    None
}

fn owns_socket(fd_dir: &Path, wanted: &[String]) -> bool {
    let Ok(fds) = std::fs::read_dir(fd_dir) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .ok()
            .and_then(|target| target.to_str().map(|t| wanted.iter().any(|w| w == t)))
            .unwrap_or(false)
    })
}

/// Inodes of the sockets in LISTEN state (`0A`) on `port` in a /proc/net/tcp table.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    let port_hex = format!("{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            let inode = fields.get(9)?;
            (local.rsplit(':').next()? == port_hex && *state == "0A")
                .then(|| inode.parse().ok())
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every thread of this test process ends at niceness 19 (the most a
    /// process may always ask for), which only slows the other tests' threads.
    #[test]
    fn niceness_reaches_the_threads_running_and_those_started_after() {
        let own = || rustix::process::getpriority_process(None).expect("getpriority");
        let (ask, asked) = std::sync::mpsc::channel::<()>();
        let running = std::thread::spawn(move || {
            asked.recv().expect("the test asks");
            own()
        });
        set_own_niceness(19).expect("setpriority");
        ask.send(()).expect("the thread waits");
        assert_eq!(
            running.join().expect("no panic"),
            19,
            "a thread that ran before"
        );
        assert_eq!(own(), 19, "the calling thread");
        let later = std::thread::spawn(own).join().expect("no panic");
        assert_eq!(later, 19, "a thread started after");
    }

    #[test]
    fn cpu_ticks_are_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "1234 (trellis (x) node) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 100 1000 200";
        assert_eq!(
            parse_stat_ticks(stat),
            Some(CpuTicks {
                user: 250,
                system: 75
            })
        );
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn memory_fields_are_read_in_kib() {
        let status = "Name:\ttrellis-node\nVmHWM:\t  123456 kB\nVmRSS:\t   99999 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(123_456));
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(99_999));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn machine_time_counts_idle_and_iowait_as_not_busy() {
        let stat = "cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(parse_machine_ticks(stat), Some((160, 980)));
    }

    #[test]
    fn only_listening_sockets_on_the_port_are_found() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1\n\
   2: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(listening_inodes(table, 8080), vec![4242]);
        assert!(listening_inodes(table, 9999).is_empty());
    }

    #[test]
    fn this_process_can_be_read() {
        let pid = std::process::id();
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(cpu_ticks(pid).is_some());
            assert!(peak_rss_kib(pid).is_some_and(|kib| kib > 0));
            assert!(machine_ticks().is_some_and(|(busy, total)| busy <= total));
        }
    }
}
