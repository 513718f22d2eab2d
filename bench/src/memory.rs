//! Resident memory of this process (`VmRSS` of `/proc/self/status`; 0 where unavailable).

/// Resident set size in bytes.
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
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
        }
    }
}
