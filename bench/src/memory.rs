//! Resident memory (`VmRSS` of `/proc/PID/status`; 0 where unavailable): of this process, and
//! of a process with all its descendants (a launched cluster: coordinator and workers).

/// Resident set size of this process in bytes.
pub fn resident_bytes() -> u64 {
    rss_of("self")
}

/// Resident bytes of process `pid` and every process below it.
pub fn resident_bytes_of_tree(pid: u32) -> u64 {
    let mut total = 0;
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        total += rss_of(&p.to_string());
        stack.extend(children_of(p));
    }
    total
}

/// Direct children of `pid` (from `/proc/PID/task/*/children`).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn rss_of(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn grows_when_memory_is_touched() {
        let before = super::resident_bytes();
        let buffer = vec![1u8; 64 << 20];
        let after = super::resident_bytes();
        std::hint::black_box(&buffer);
        if before > 0 {
            assert!(after >= before + (48 << 20), "{before} -> {after}");
            let tree = super::resident_bytes_of_tree(std::process::id());
            assert!(tree >= before + (48 << 20), "{before} -> tree {tree}");
        }
    }
}
