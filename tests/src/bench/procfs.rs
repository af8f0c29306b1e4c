//! What `/proc` says about a process (CPU time, resident memory) and about the machine.

use std::path::Path;
use std::time::Duration;

/// Errors reading `/proc`.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unexpected format of {path}")]
    Format { path: String },
}

fn read(path: &str) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|source| ProcError::Read {
        path: path.to_string(),
        source,
    })
}

/// User + system CPU time the process has used so far (all its threads; not its
/// children).
pub fn cpu_time(pid: u32) -> Result<Duration, ProcError> {
    let path = format!("/proc/{pid}/stat");
    let stat = read(&path)?;
    let format = || ProcError::Format { path: path.clone() };
    // `pid (comm) state ...`: comm may contain spaces and parentheses, so fields are
    // counted from the last ')'. utime and stime are fields 14 and 15 (1-based).
    let rest = stat.rsplit_once(')').ok_or_else(format)?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let ticks = |field: usize| -> Result<u64, ProcError> {
        fields
            .get(field - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(format)
    };
    let total = ticks(14)? + ticks(15)?;
    Ok(Duration::from_secs_f64(
        total as f64 / clock_ticks_per_second(),
    ))
}

fn clock_ticks_per_second() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(hz)) if hz > 0 => hz as f64,
        // Linux has used 100 on every architecture for decades.
        _ => 100.0,
    }
}

/// Resident set size in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> Result<u64, ProcError> {
    let path = format!("/proc/{pid}/status");
    let status = read(&path)?;
    kib_field(&status, "VmRSS:")
        .map(|kib| kib * 1024)
        .ok_or(ProcError::Format { path })
}

/// `MemAvailable` of the machine in bytes.
pub fn mem_available_bytes() -> Result<u64, ProcError> {
    let info = read("/proc/meminfo")?;
    kib_field(&info, "MemAvailable:")
        .map(|kib| kib * 1024)
        .ok_or(ProcError::Format {
            path: "/proc/meminfo".into(),
        })
}

fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The machine the numbers were measured on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpu_model = read("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let memory_gib = read("/proc/meminfo")
            .ok()
            .and_then(|info| kib_field(&info, "MemTotal:"))
            .map_or(0.0, |kib| kib as f64 / (1024.0 * 1024.0));
        let kernel = nix::sys::utsname::uname()
            .map(|u| {
                format!(
                    "{} {}",
                    u.sysname().to_string_lossy(),
                    u.release().to_string_lossy()
                )
            })
            .unwrap_or_else(|_| "unknown".into());
        Machine {
            cpus,
            cpu_model,
            memory_gib,
            kernel,
        }
    }
}

/// Whether `path` is an executable file.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).unwrap() > 0);
        let _ = cpu_time(pid).unwrap();
        assert!(mem_available_bytes().unwrap() > 0);
    }

    #[test]
    fn parses_kib_fields() {
        assert_eq!(
            kib_field("VmPeak:\t 10 kB\nVmRSS:\t  2048 kB\n", "VmRSS:"),
            Some(2048)
        );
        assert_eq!(kib_field("VmPeak: 10 kB\n", "VmRSS:"), None);
    }
}
