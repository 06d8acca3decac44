//! Process memory: when freed memory goes back to the OS, and the peak resident set.
//!
//! The binary allocates everything, libtorch's tensors included, through mimalloc (see
//! `main.rs`). Purging freed pages on mimalloc's short default delay made every batch's buffers
//! come back as fresh zero-filled page faults (160–230 k per 500 documents, ~12% of the wall
//! time); never purging let the resident set creep up with corpus length as buffers of ever-new
//! shapes fragment the arenas. So purging is scheduled with a delay long enough never to fire on
//! its own, and each device thread releases what it freed when its resident set has grown past
//! what its batches need ([`ReleasePolicy`]); the other stage threads follow
//! ([`ReleaseFollower`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

/// mimalloc's `purge_delay` option, whose environment name is `MIMALLOC_PURGE_DELAY`.
/// `libmimalloc-sys` exports no constant for it, so the index is its position in the C enum;
/// `jerex doctor` prints the option read back, and a test checks it against the environment
/// variable of that name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Ten minutes: freed memory stays committed for reuse until [`release_freed`] runs.
const PURGE_DELAY_MS: std::os::raw::c_long = 600_000;

/// Sets the purge delay (unless `MIMALLOC_PURGE_DELAY` is set). Call before other threads start.
pub fn configure() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide option, before any other thread exists to read it.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

/// mimalloc's purge delay in milliseconds, as the allocator reads it.
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reads a process-wide option.
    unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
}

/// Returns to the OS now the calling thread's freed pages and the free memory of mimalloc's
/// process-wide arenas; other threads' freed pages stay in their heaps until they call this
/// too. A few milliseconds; call between stretches of work, not inside them.
pub fn release_freed() {
    // SAFETY: mi_collect only walks mimalloc's own structures.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Releases made so far by [`ReleasePolicy::after_batch`], in the whole process.
static RELEASES: AtomicU64 = AtomicU64::new(0);

/// Lets a long-lived stage thread (reader, bucketer, writer...) follow the device threads'
/// releases: its own freed pages are returned only when it collects itself.
#[derive(Debug, Default)]
pub struct ReleaseFollower {
    seen: u64,
}

impl ReleaseFollower {
    /// Releases this thread's freed pages if a device thread has released since the last call.
    /// An atomic load otherwise; call once per item of the thread's loop.
    pub fn follow(&mut self) {
        let releases = RELEASES.load(Ordering::Relaxed);
        if releases != self.seen {
            self.seen = releases;
            release_freed();
        }
    }
}

/// A `/proc/self/status` field in bytes, where /proc reports it.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status.lines().find_map(|l| l.strip_prefix(field))?;
    let kib: u64 = kib.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// Peak resident memory of this process in bytes (`VmHWM`), where /proc reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    status_bytes("VmHWM:")
}

/// Resident memory of this process in bytes (`VmRSS`), where /proc reports it.
pub fn rss_bytes() -> Option<u64> {
    status_bytes("VmRSS:")
}

/// When a device thread returns freed memory to the OS. mimalloc keeps a thread's freed pages
/// in that thread's heap, where only a collect on the same thread releases them, so the thread
/// that allocates the batches' tensors decides, after each batch:
/// - the *base* is the lowest resident set seen just after a release (or at the start);
/// - a batch's *rise* is how far the first batch after a release raises the resident set above
///   that release's level: what a batch needs with nothing left over. The *working set* is the
///   median of the last [`Self::RISES`] rises;
/// - once the resident set exceeds base + working set + slack, and has grown by more than the
///   slack since the last release, the memory left over by earlier batches (freed, but not
///   reused by later batches of other shapes) is released.
///
/// The cap follows what typical batches need, not the largest batch a run has met: a maximum
/// would only grow with the number of batches, and with it the peak of long runs. Each release
/// makes the next batch fault its buffers in afresh, which is why this is not done after every
/// batch (5–10% of the wall time).
#[derive(Debug, Clone)]
pub struct ReleasePolicy {
    /// Resident set after the last release.
    floor: u64,
    /// Lowest resident set after a release (or at the start).
    base: u64,
    /// The last rises, oldest first.
    rises: VecDeque<u64>,
    working_set: u64,
    slack: u64,
    measure_next: bool,
}

impl ReleasePolicy {
    /// Leftovers tolerated above the working set before a release. Each release makes the next
    /// batches fault their buffers back in, so a slack too small releases often and costs
    /// speed (the trade-off measured in `docs/performance.md`).
    pub const SLACK: u64 = 64 << 20;
    /// Rises the working set is the median of.
    pub const RISES: usize = 31;

    /// A policy starting from the resident set `floor`, releasing past `slack` leftovers.
    pub fn new(floor: u64, slack: u64) -> ReleasePolicy {
        ReleasePolicy {
            floor,
            base: floor,
            rises: VecDeque::with_capacity(Self::RISES),
            working_set: 0,
            slack,
            measure_next: true,
        }
    }

    /// Starts from the current resident set, with the default slack; `None` where /proc does
    /// not report it (then nothing is released).
    pub fn here() -> Option<ReleasePolicy> {
        rss_bytes().map(|rss| ReleasePolicy::new(rss, Self::SLACK))
    }

    /// Whether to release now, given the resident set after a batch.
    pub fn should_release(&mut self, rss: u64) -> bool {
        if self.measure_next {
            if self.rises.len() == Self::RISES {
                self.rises.pop_front();
            }
            self.rises.push_back(rss.saturating_sub(self.floor));
            let mut sorted: Vec<u64> = self.rises.iter().copied().collect();
            sorted.sort_unstable();
            self.working_set = sorted[sorted.len() / 2];
            self.measure_next = false;
        }
        // The second condition stops futile releases once the level a release leaves has
        // itself risen near the cap (live data, or pages pinned by a few live blocks).
        rss > self.base + self.working_set + self.slack && rss > self.floor + self.slack
    }

    /// Records a release that left the resident set at `rss`.
    pub fn released(&mut self, rss: u64) {
        self.floor = rss;
        self.base = self.base.min(rss);
        self.measure_next = true;
    }

    /// Call after each batch, on the thread that ran it: releases when the policy says so,
    /// after `others` (which releases on other threads) has run; [`ReleaseFollower`]s follow.
    pub fn after_batch(&mut self, others: impl FnOnce()) {
        let Some(before) = rss_bytes() else { return };
        if self.should_release(before) {
            others();
            release_freed();
            RELEASES.fetch_add(1, Ordering::Relaxed);
            if let Some(after) = rss_bytes() {
                self.released(after);
                tracing::debug!(
                    before_mib = before >> 20,
                    after_mib = after >> 20,
                    working_set_mib = self.working_set >> 20,
                    "released freed memory"
                );
            }
        }
    }
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
    fn releases_past_lowest_base_plus_median_rise_plus_slack() {
        const MIB: u64 = 1 << 20;
        let mut policy = ReleasePolicy::new(300 * MIB, 32 * MIB);
        // The first batch sets the working set: 60 MiB above the start.
        assert!(!policy.should_release(360 * MIB));
        // Leftovers up to the slack are kept; past it, released.
        assert!(!policy.should_release(392 * MIB));
        assert!(policy.should_release(393 * MIB));
        // A release that leaves more behind does not raise the cap (rises 60, 50)...
        policy.released(320 * MIB);
        assert!(!policy.should_release(370 * MIB));
        assert!(policy.should_release(393 * MIB));
        // ...nor does one larger batch (rises 60, 50, 80)...
        policy.released(310 * MIB);
        assert!(!policy.should_release(390 * MIB));
        assert!(policy.should_release(393 * MIB));
        // ...but batches that rise more most of the time do (60, 50, 80, 90: median 80)...
        policy.released(310 * MIB);
        assert!(!policy.should_release(400 * MIB));
        assert!(!policy.should_release(412 * MIB));
        assert!(policy.should_release(413 * MIB));
        // ...and a lower release lowers it (40, 50, 60, 80, 90: median 60).
        policy.released(290 * MIB);
        assert!(!policy.should_release(330 * MIB));
        assert!(!policy.should_release(382 * MIB));
        assert!(policy.should_release(383 * MIB));
        // Only the last rises count: after enough small batches the large ones are forgotten.
        for _ in 0..ReleasePolicy::RISES {
            policy.released(290 * MIB);
            assert!(!policy.should_release(300 * MIB));
        }
        assert!(policy.should_release(333 * MIB));
        // A release that leaves the level near the cap is not repeated until the slack has
        // gathered again.
        policy.released(330 * MIB);
        assert!(!policy.should_release(340 * MIB));
        assert!(!policy.should_release(362 * MIB));
        assert!(policy.should_release(363 * MIB));
    }

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
