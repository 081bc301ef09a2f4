//! CPU time of a process or thread, read from `/proc`: tests check that a daemon does not
//! spin, and the benchmarks report CPU per event.

use std::time::Duration;

/// CPU time used so far, split as the kernel accounts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTime {
    /// Time in user space.
    pub user: Duration,
    /// Time in the kernel on the task's behalf.
    pub system: Duration,
}

impl CpuTime {
    /// Of the process or thread whose stat file is `stat` (`/proc/PID/stat`,
    /// `/proc/thread-self/stat`). The kernel counts in ticks of 10 ms (USER_HZ is 100 on
    /// every architecture Linux runs on), so only long runs give useful figures.
    pub fn of(stat: &str) -> std::io::Result<CpuTime> {
        let text = std::fs::read_to_string(stat)?;
        let bad = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{stat}: unexpected format"),
            )
        };
        // Fields after the command name, which is in parentheses and may contain spaces,
        // start with field 3 (the state); utime and stime are fields 14 and 15.
        let mut fields = text
            .rsplit_once(')')
            .ok_or_else(bad)?
            .1
            .split_whitespace()
            .skip(11);
        let mut ticks = || -> std::io::Result<Duration> {
            let n: u64 = fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
            Ok(Duration::from_millis(n * 10))
        };
        Ok(CpuTime {
            user: ticks()?,
            system: ticks()?,
        })
    }

    /// Of process `pid`, all its threads together.
    pub fn of_process(pid: u32) -> std::io::Result<CpuTime> {
        CpuTime::of(&format!("/proc/{pid}/stat"))
    }

    /// User plus system time.
    pub fn total(self) -> Duration {
        self.user + self.system
    }

    /// What was used since `earlier`.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_thread_reads_and_grows() {
        let before = CpuTime::of("/proc/thread-self/stat").unwrap();
        // Spin until the kernel has counted a tick of it (10 ms), however loaded the machine.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        let used = loop {
            for _ in 0..100_000 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
            let used = CpuTime::of("/proc/thread-self/stat").unwrap().since(before);
            if used.total() > Duration::ZERO || start.elapsed() > Duration::from_secs(10) {
                break used;
            }
        };
        assert!(used.total() >= Duration::from_millis(10), "{used:?} ({x})");
        assert!(CpuTime::of("/proc/self/no-such-file").is_err());
    }
}
