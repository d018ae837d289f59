//! The process's file-descriptor budget: the open-files limit and how many
//! connections fit in it.
//!
//! The broker needs [`BROKER_FDS_PER_CONNECTION`] descriptors per client
//! connection; the gateway, which runs the broker in-process, needs one per
//! HTTP connection from the same limit. Running out makes rumqttd's accept
//! loop spin on `EMFILE` and every listener of the process refuse
//! everyone, so each side caps its connections to what fits (and warns).

/// Descriptors kept for everything that is not a client connection:
/// sled's files, rumqttd's loopback listeners, the runtime, logs.
pub const RESERVED_FDS: u64 = 256;

/// Descriptors the broker needs per client connection: the client's
/// socket, the front door's socket to rumqttd, and rumqttd's end of it.
pub const BROKER_FDS_PER_CONNECTION: u64 = 3;

/// The soft limit on open files, from `/proc/self/limits` (Linux); `None`
/// when unknown or unlimited.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files(&limits)
}

fn parse_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// How many connections of `per_connection` descriptors fit in `limit`
/// after [`RESERVED_FDS`] and `reserved` more; at least 1.
pub fn connections_fitting(limit: u64, reserved: u64, per_connection: u64) -> usize {
    let free = limit.saturating_sub(RESERVED_FDS).saturating_sub(reserved);
    usize::try_from(free / per_connection.max(1))
        .unwrap_or(usize::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fitting_connections() {
        assert_eq!(connections_fitting(1024, 0, 3), 256);
        assert_eq!(connections_fitting(1024, 192, 3), 192);
        assert_eq!(connections_fitting(1024, 0, 1), 768);
        // Never zero, even when the reservation eats everything.
        assert_eq!(connections_fitting(100, 1000, 3), 1);
    }

    #[test]
    fn parses_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max open files            1024                 524288               files\n";
        assert_eq!(parse_open_files(text), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_files(unlimited), None);
        assert!(open_files_limit().is_some_and(|l| l > 0) || !cfg!(target_os = "linux"));
    }
}
