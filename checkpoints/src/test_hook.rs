//! Fault injection for the crash and disk-full tests of the compression tool, read once from
//! the environment variable `BITNET_CKPT_TEST_HOOK` (unset in normal use: every call is a no-op).
//!
//! - `block-at:POINT` — at `POINT` the process prints `BITNET_CKPT_BLOCKED POINT` on stderr and
//!   blocks forever, so a test can `kill -9` it exactly there. Points: `tensor:N` (after the
//!   N-th tensor, counted from 1, was written to a file), `before-commit` (every file written
//!   and fsynced, before the rename into place), `after-swap` (the new output is in place, the
//!   previous one not yet removed).
//! - `enospc-after:BYTES` — writes fail with "No space left on device" once `BYTES` bytes were
//!   written in all ([`charge`]), as a full disk would.
//!
//! Used by [`crate::tensor_writer`] and [`crate::output_dir`].

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable.
pub const ENV: &str = "BITNET_CKPT_TEST_HOOK";
/// What a blocked process prints (then a space and the point).
pub const BLOCKED_MARKER: &str = "BITNET_CKPT_BLOCKED";

#[derive(Debug)]
enum Hook {
    None,
    BlockAt(String),
    FailAfter(u64),
}

fn hook() -> &'static Hook {
    static HOOK: OnceLock<Hook> = OnceLock::new();
    HOOK.get_or_init(|| {
        let value = std::env::var(ENV).unwrap_or_default();
        if let Some(point) = value.strip_prefix("block-at:") {
            Hook::BlockAt(point.to_string())
        } else if let Some(bytes) = value.strip_prefix("enospc-after:") {
            bytes.parse().map_or(Hook::None, Hook::FailAfter)
        } else {
            Hook::None
        }
    })
}

/// Blocks forever when the hook names `point` (see the module doc).
pub fn point(point: &str) {
    if let Hook::BlockAt(p) = hook() {
        if p == point {
            eprintln!("{BLOCKED_MARKER} {point}");
            let _ = std::io::stderr().flush();
            loop {
                std::thread::park();
            }
        }
    }
}

/// Accounts `bytes` about to be written; fails like a full disk past the hook's limit.
pub fn charge(bytes: usize) -> std::io::Result<()> {
    static WRITTEN: AtomicU64 = AtomicU64::new(0);
    if let Hook::FailAfter(limit) = hook() {
        let before = WRITTEN.fetch_add(bytes as u64, Ordering::Relaxed);
        if before + bytes as u64 > *limit {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
    }
    Ok(())
}
