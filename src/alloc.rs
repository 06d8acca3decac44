//! Process memory: when freed memory goes back to the OS, and the peak resident set.
//!
//! The binary allocates everything, libtorch's tensors included, through mimalloc (see
//! `main.rs`). Purging freed pages on mimalloc's short default delay made every batch's buffers
//! come back as fresh zero-filled page faults (160–230 k per 500 documents, ~12% of the wall
//! time); never purging let the resident set creep up with corpus length as buffers of ever-new
//! shapes fragment the arenas (+13 to +19% from 1,000 to 5,000 documents). So purging is
//! scheduled with a delay long enough never to fire on its own, and the pipeline releases
//! everything freed once per look-ahead window ([`release_freed`]): +5% from 1,000 to 5,000.

/// mimalloc's `purge_delay` option (v3 numbering; `MIMALLOC_PURGE_DELAY` in the environment).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Ten minutes: freed memory stays committed for reuse until [`release_freed`] runs.
const PURGE_DELAY_MS: std::os::raw::c_long = 600_000;

/// Sets the purge delay (unless `MIMALLOC_PURGE_DELAY` is set). Call before other threads start.
pub fn configure() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide option; mimalloc reads options atomically.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

/// Returns every freed page of every thread to the OS now (mimalloc's arenas are process-wide;
/// the calling thread's own empty pages are freed too). A few milliseconds; call between
/// stretches of work, not inside them.
pub fn release_freed() {
    // SAFETY: mi_collect only walks mimalloc's own structures.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Peak resident memory of this process in bytes (`VmHWM`), where /proc reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    let kib: u64 = kib.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// Restarts the peak (`VmHWM`) from the current resident set, so a later [`peak_rss_bytes`]
/// covers only what follows (e.g. not the benchmark's own input generation). No-op where /proc
/// does not allow it.
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_covers_touched_memory_and_release_keeps_live_data() {
        let live: Vec<u8> = vec![7; 64 << 20];
        let peak = peak_rss_bytes().expect("Linux reports VmHWM");
        assert!(
            peak >= 64 << 20,
            "peak {peak} below the 64 MiB just touched"
        );
        drop(vec![1u8; 32 << 20]);
        release_freed();
        assert!(live.iter().step_by(4096).all(|&b| b == 7));
    }
}
