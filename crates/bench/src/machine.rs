//! A description of the machine a benchmark runs on, and a warning when it is busy.
//!
//! Everything is read from `/proc` (Linux); on other systems, or when a file cannot be read,
//! the field says `unknown` instead of failing the run.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the benchmark runs on. Printed at the top of every report.
#[derive(Debug, Clone)]
pub struct Machine {
    /// CPU model name from `/proc/cpuinfo`.
    pub cpu: String,
    /// Logical cores available to this process.
    pub cores: usize,
    /// Total memory in bytes from `/proc/meminfo`, if readable.
    pub memory_bytes: Option<u64>,
    /// Kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel: String,
    /// Load averages over 1, 5 and 15 minutes (`/proc/loadavg`), if readable.
    pub load: Option<[f64; 3]>,
}

impl Machine {
    /// Reads the description of this machine.
    pub fn detect() -> Machine {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Machine {
            cpu: cpu_model().unwrap_or_else(|| "unknown".to_string()),
            cores,
            memory_bytes: memory_bytes(),
            kernel: read_trimmed("/proc/sys/kernel/osrelease")
                .map(|k| format!("Linux {k}"))
                .unwrap_or_else(|| std::env::consts::OS.to_string()),
            load: load_average(),
        }
    }

    /// A warning when the 1-minute load average exceeds half the cores: other work is
    /// competing for the CPU or the disk and the numbers will be lower and noisier.
    pub fn load_warning(&self) -> Option<String> {
        let [one, _, _] = self.load?;
        // Exact for any realistic core count.
        let threshold = 0.5 * self.cores as f64;
        (one > threshold).then(|| {
            format!(
                "WARNING: 1-minute load average is {one:.2} on {} cores (> {threshold:.1}); \
                 other work is running and the results will be lower and noisier than on an \
                 idle machine",
                self.cores
            )
        })
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let memory = self
            .memory_bytes
            .map_or_else(|| "unknown".to_string(), |b| format!("{:.1} GiB", gib(b)));
        let load = self.load.map_or_else(
            || "unknown".to_string(),
            |[a, b, c]| format!("{a:.2} {b:.2} {c:.2}"),
        );
        write!(
            f,
            "machine: {} | {} cores | {} memory | {} | load {}",
            self.cpu, self.cores, memory, self.kernel, load
        )
    }
}

/// Prints the machine description and, when the machine is busy, a warning: the header
/// of every report.
pub fn print_header() {
    let machine = Machine::detect();
    println!("{machine}");
    if let Some(warning) = machine.load_warning() {
        println!("{warning}");
    }
}

/// Prints the directory a durable benchmark writes to and its filesystem, with a warning
/// when the filesystem is memory-backed.
pub fn print_directory(dir: &Path) {
    match Filesystem::of(dir) {
        Some(fs) => {
            println!("directory: {} ({fs})", dir.display());
            if fs.is_memory_backed() {
                println!(
                    "WARNING: {} is memory-backed; fsync reaches no disk and the numbers \
                     below say nothing about durability costs (use --dir on a real disk)",
                    fs.fs_type
                );
            }
        }
        None => println!("directory: {} (filesystem unknown)", dir.display()),
    }
}

/// CPU time (user + system) this process has used so far, from `/proc/self/stat`, or
/// `None` when it cannot be read. Counts every thread, including threads that ended.
/// Resolution: one clock tick (10 ms).
pub fn process_cpu_time() -> Option<Duration> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    parse_cpu_ticks(&stat).map(|ticks| Duration::from_millis(ticks * 1000 / CLOCK_TICKS_PER_SEC))
}

/// CPU time (user + system) the calling thread has used so far, from
/// `/proc/thread-self/stat`; same resolution as [`process_cpu_time`].
pub fn thread_cpu_time() -> Option<Duration> {
    let stat = fs::read_to_string("/proc/thread-self/stat").ok()?;
    parse_cpu_ticks(&stat).map(|ticks| Duration::from_millis(ticks * 1000 / CLOCK_TICKS_PER_SEC))
}

/// CPU time (user + system) process `pid` has used so far, from `/proc/<pid>/stat`, or
/// `None` when it cannot be read (e.g. the process is gone). Same resolution as
/// [`process_cpu_time`].
pub fn cpu_time_of(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| Duration::from_millis(ticks * 1000 / CLOCK_TICKS_PER_SEC))
}

/// A memory field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, ...) in bytes; `pid` `None`
/// reads this process. `None` when the process or the field is missing.
pub fn memory_of(pid: Option<u32>, field: &str) -> Option<u64> {
    let path = pid.map_or_else(
        || "/proc/self/status".to_string(),
        |p| format!("/proc/{p}/status"),
    );
    let status = fs::read_to_string(path).ok()?;
    let line = status
        .lines()
        .find(|l| l.split_once(':').is_some_and(|(name, _)| name == field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Linux reports times in `/proc` in units of `USER_HZ`, which is 100 on every
/// architecture Linux supports (it is part of the ABI, independent of the kernel's HZ).
const CLOCK_TICKS_PER_SEC: u64 = 100;

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name
/// (field 2) is in parentheses and may contain spaces, so fields are counted after the
/// last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts with field 3 (state); utime is field 14, stime field 15.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// The filesystem holding a directory, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filesystem {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Filesystem type (`ext4`, `xfs`, `tmpfs`, `overlay`, ...).
    pub fs_type: String,
    /// The mounted device or source.
    pub source: String,
}

impl Filesystem {
    /// The filesystem holding `dir` (the mount with the longest matching mount point), or
    /// `None` when it cannot be determined.
    pub fn of(dir: &Path) -> Option<Filesystem> {
        let dir = dir.canonicalize().ok()?;
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
        mountinfo
            .lines()
            .filter_map(parse_mountinfo_line)
            .filter(|fs| dir.starts_with(&fs.mount_point))
            // Later mounts shadow earlier ones on the same mount point: keep the last longest.
            .fold(None, |best: Option<Filesystem>, fs| match best {
                Some(b) if b.mount_point.as_os_str().len() > fs.mount_point.as_os_str().len() => {
                    Some(b)
                }
                _ => Some(fs),
            })
    }

    /// Whether `fsync` on this filesystem reaches no disk at all (memory-backed), so that
    /// durability numbers taken on it mean nothing.
    pub fn is_memory_backed(&self) -> bool {
        matches!(self.fs_type.as_str(), "tmpfs" | "ramfs")
    }
}

impl fmt::Display for Filesystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} on {} ({})",
            self.fs_type,
            self.mount_point.display(),
            self.source
        )
    }
}

/// Parses one line of `/proc/self/mountinfo`:
/// `id parent major:minor root mount-point options [optional...] - fstype source super-options`.
fn parse_mountinfo_line(line: &str) -> Option<Filesystem> {
    let (left, right) = line.split_once(" - ")?;
    let mount_point = left.split(' ').nth(4)?;
    let mut right = right.split(' ');
    let fs_type = right.next()?.to_string();
    let source = right.next().unwrap_or("").to_string();
    Some(Filesystem {
        mount_point: PathBuf::from(unescape_mount_path(mount_point)),
        fs_type,
        source,
    })
}

/// Undoes the octal escapes (`\040` for a space, ...) the kernel uses in mount paths.
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let (b'\\', Some(&[a, b, c])) = (bytes[i], bytes.get(i + 1..i + 4)) {
            let octal = |d: u8| (b'0'..=b'7').contains(&d).then(|| u32::from(d - b'0'));
            if let (Some(a), Some(b), Some(c)) = (octal(a), octal(b), octal(c)) {
                if let Ok(code) = u8::try_from(a * 64 + b * 8 + c) {
                    out.push(code);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads a small text file and trims it.
fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// The first `model name` in `/proc/cpuinfo`.
fn cpu_model() -> Option<String> {
    let info = fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
fn memory_bytes() -> Option<u64> {
    let info = fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The three load averages from `/proc/loadavg`.
fn load_average() -> Option<[f64; 3]> {
    let text = fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|s| s.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Bytes as GiB, for display.
fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let fs = parse_mountinfo_line(
            "29 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,errors=remount-ro",
        )
        .unwrap();
        assert_eq!(fs.mount_point, PathBuf::from("/"));
        assert_eq!(fs.fs_type, "ext4");
        assert_eq!(fs.source, "/dev/vda");

        let fs = parse_mountinfo_line("40 29 0:35 / /mnt/my\\040disk rw - tmpfs tmpfs rw").unwrap();
        assert_eq!(fs.mount_point, PathBuf::from("/mnt/my disk"));
        assert!(fs.is_memory_backed());
    }

    #[test]
    fn parses_cpu_ticks_even_with_spaces_in_the_command() {
        let stat = "1234 (my (odd) cmd) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 37 0 0 20 0 3 0 100 1000 200";
        assert_eq!(parse_cpu_ticks(stat), Some(287));
        assert_eq!(parse_cpu_ticks("1 (x) S 1"), None);
        assert!(process_cpu_time().is_some());
    }

    #[test]
    fn warns_only_above_half_the_cores() {
        let mut m = Machine {
            cpu: "test".into(),
            cores: 2,
            memory_bytes: None,
            kernel: "test".into(),
            load: Some([0.9, 0.0, 0.0]),
        };
        assert!(m.load_warning().is_none());
        m.load = Some([1.5, 0.0, 0.0]);
        assert!(m.load_warning().is_some());
        m.load = None;
        assert!(m.load_warning().is_none());
    }
}
