//! Handing memory back to the kernel after a burst.
//!
//! A burst of events fills the queue with tens of thousands of small allocations; once they are
//! freed, glibc keeps the pages in its free lists (only the top of the heap is returned), so a
//! daemon that saw one storm would stay large for its whole life. `malloc_trim` releases every
//! free page, also in the middle of the heap. It walks the allocator's lists, so the daemon
//! calls it only when it goes idle after many events.
#![allow(unsafe_code)]

/// Returns the allocator's free pages to the kernel (glibc; a no-op elsewhere).
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointers from us; it locks and walks glibc's own arenas and
    // is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
        if std::env::var_os("UEVD_MSTATS").is_some() {
            libc::malloc_stats();
        }
    }
}

/// Keeps every thread on the one main heap (glibc; a no-op elsewhere). glibc gives each new
/// thread its own arena, and the sysfs walk's short-lived threads left four of them behind,
/// each holding ~100 KiB of resident pages for a few bytes in use. The daemon allocates little
/// off its event-loop thread, so the shared lock costs nothing measurable; this must run before the
/// first thread starts.
pub fn use_one_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a glibc tunable; it takes no pointers and is called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
