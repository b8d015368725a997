//! Giving memory back to the system after a burst.
//!
//! glibc's allocator keeps what a burst of connections freed (thousands of pre-auth connections
//! closed, sessions gone after a restart of the clients' network): the free chunks stay mapped
//! in its arenas and the resident memory stays at the burst's peak, since only the top of an
//! arena is returned on its own. Once a second, this task asks the allocator how much it holds
//! free (`mallinfo2`, a walk of its bins) and, when that is more than [`FREE_LIMIT`] and more
//! than a quarter of what it has mapped, returns the free pages (`malloc_trim`, which releases
//! whole free pages inside arenas too). A server whose memory is in use pays one `mallinfo2`
//! per second; the trim itself only follows a burst.
//!
//! Elsewhere than glibc (musl, other systems) the task is not started.

use std::time::Duration;

/// How often the allocator's free memory is looked at.
const PERIOD: Duration = Duration::from_secs(1);
/// Free memory (bytes) the allocator may keep without being asked to return it.
const FREE_LIMIT: usize = 8 << 20;

/// Starts the task; it runs until the runtime ends.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn spawn() -> Option<tokio::task::JoinHandle<()>> {
    Some(tokio::spawn(async {
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Both walk the arenas under their locks: off the runtime's threads.
            let done = tokio::task::spawn_blocking(|| {
                // SAFETY: mallinfo2 only reads the allocator's statistics (glibc ≥ 2.33).
                let info = unsafe { libc::mallinfo2() };
                let mapped = info.arena.saturating_add(info.hblkhd);
                // SAFETY: malloc_trim releases free memory; it has no precondition.
                let trimmed =
                    should_trim(info.fordblks, mapped).then(|| unsafe { libc::malloc_trim(0) });
                (info.fordblks, trimmed)
            })
            .await;
            if let Ok((free, Some(trimmed))) = done {
                tracing::debug!(free, trimmed, "returned free memory");
            }
        }
    }))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn spawn() -> Option<tokio::task::JoinHandle<()>> {
    None
}

/// Whether `free` bytes held by the allocator, of `mapped`, are worth returning.
fn should_trim(free: usize, mapped: usize) -> bool {
    free > FREE_LIMIT && free > mapped / 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_after_a_burst_only() {
        // A burst's worth of free memory, most of what is mapped.
        assert!(should_trim(50 << 20, 68 << 20));
        // Little free memory, or free memory that is a small part of a large heap in use.
        assert!(!should_trim(1 << 20, 2 << 20));
        assert!(!should_trim(10 << 20, 200 << 20));
    }
}
