//! The worker pool: processes events inline or on threads, reports completions through an
//! eventfd.
//!
//! With workers, every event goes to them, so that receiving, parsing and ordering on the event
//! thread run beside policy and node creation, and a slow policy step (a `PROGRAM` helper)
//! holds up only its own device's events. (Session 5 ran a lone event inline to save the
//! hand-off's two wake-ups; a slow lone event then blocked the loop, unrelated events
//! included, so that was taken back.) With zero workers everything is inline, which is what
//! a single-core system wants.
//!
//! Hand-offs are batched: the event thread hands over every job it can start under one lock
//! and wakes only idle workers; a worker signals the eventfd once it has gathered
//! `SIGNAL_BATCH` completions or has emptied the job queue (the event thread takes the whole
//! list at once). While jobs are out, the event thread also collects every 2 ms
//! (`COLLECT_EVERY`), so a fast event does not wait for a slow unrelated one queued behind it
//! on its worker. While every worker has its fill and the queue holds a refill, the event
//! thread stops listening to the kernel's socket (`Daemon::pool_saturated`). Before, the
//! first completion of each batch signalled, and every arriving uevent woke the event thread:
//! a wake-up per event made `--children 1` half as fast as inline (30–39k against 55–65k
//! events/s in a 100 000-event burst); with batches it is as fast (58–65k).

use super::nodes::DevFs;
use super::process::{Known, Processed, Processor};
use super::queue::Job;
use rustix::event::{eventfd, EventfdFlags};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

type Work = (Job, Known);

/// Jobs handed to the pool at most, per worker: enough that workers never wait for the
/// event thread during a burst.
const DEPTH: usize = 32;

/// Completions a busy worker gathers before it wakes the event thread (which then hands
/// over as many new jobs at once): one wake-up per event cost more than the event itself.
const SIGNAL_BATCH: usize = DEPTH / 2;

/// Jobs waiting for a worker.
#[derive(Default)]
struct Jobs {
    queue: VecDeque<Work>,
    /// Workers waiting on [`Shared::job_ready`]: only then is a wake-up needed.
    idle: usize,
    /// Workers still running (a panicking worker leaves; then the pool works inline).
    alive: usize,
    closed: bool,
}

/// What the event thread and the workers share.
#[derive(Default)]
struct Shared {
    jobs: Mutex<Jobs>,
    job_ready: Condvar,
    done: Mutex<Vec<Processed>>,
}

/// Locks `m`, also after a panic elsewhere poisoned it (the data stays consistent: every
/// critical section here is a push or a take).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs [`Processor::process`] inline or on threads.
pub struct Pool<F> {
    processor: Arc<Processor<F>>,
    workers: usize,
    /// Submitted and not yet collected (inline and handed off).
    in_flight: usize,
    /// Handed to workers and not yet collected.
    handed_off: usize,
    /// Processed inline, waiting for [`Pool::completed`].
    inline_done: Vec<Processed>,
    /// Submitted for the workers, handed over together by [`Pool::hand_off`].
    staged: Vec<Work>,
    shared: Arc<Shared>,
    wake: Arc<OwnedFd>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// CLOCK_MONOTONIC in µs: when a device was first initialised.
pub fn monotonic_usec() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Counts a worker out when its thread ends, normally or by a panic.
struct Leaving(Arc<Shared>);

impl Drop for Leaving {
    fn drop(&mut self) {
        lock(&self.0.jobs).alive -= 1;
    }
}

impl<F: DevFs + 'static> Pool<F> {
    /// Starts `workers` threads (none: inline processing).
    pub fn new(processor: Arc<Processor<F>>, workers: usize) -> std::io::Result<Pool<F>> {
        let wake = Arc::new(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?);
        let mut pool = Pool {
            processor,
            workers,
            in_flight: 0,
            handed_off: 0,
            inline_done: Vec::new(),
            staged: Vec::new(),
            shared: Arc::new(Shared::default()),
            wake,
            threads: Vec::new(),
        };
        pool.start_workers()?;
        Ok(pool)
    }

    /// Starts the worker threads; on failure the ones started keep running.
    fn start_workers(&mut self) -> std::io::Result<()> {
        for i in 0..self.workers {
            let shared = Arc::clone(&self.shared);
            let processor = Arc::clone(&self.processor);
            let wake = Arc::clone(&self.wake);
            lock(&shared.jobs).alive += 1;
            let spawned = std::thread::Builder::new()
                .name(format!("uevd-worker-{i}"))
                .spawn(move || {
                    let _leaving = Leaving(Arc::clone(&shared));
                    while let Some((job, known)) = next_job(&shared) {
                        let processed = processor.process(job, known, monotonic_usec());
                        let collected_soon = {
                            let mut done = lock(&shared.done);
                            done.push(processed);
                            done.len() == SIGNAL_BATCH
                        };
                        // The completion that empties the job queue always signals, so
                        // nothing stays uncollected; until then one wake-up per batch.
                        if collected_soon || lock(&shared.jobs).queue.is_empty() {
                            let _ = rustix::io::write(&*wake, &1u64.to_ne_bytes());
                        }
                    }
                });
            match spawned {
                Ok(thread) => self.threads.push(thread),
                Err(e) => {
                    lock(&self.shared.jobs).alive -= 1;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Ends the worker threads and starts fresh ones, so that what each thread's allocator
    /// cache holds goes back to the heap (see `daemon::run`). Only while nothing is in flight;
    /// if no new thread can be started, the pool works with those it has, or inline.
    pub fn restart_workers(&mut self) -> std::io::Result<()> {
        if self.workers == 0 || self.in_flight > 0 {
            return Ok(());
        }
        self.stop_workers();
        lock(&self.shared.jobs).closed = false;
        self.start_workers()
    }

    /// Whether another job can start now.
    pub fn has_capacity(&self) -> bool {
        self.handed_off < self.capacity()
    }

    /// How many jobs the workers hold at most.
    pub fn capacity(&self) -> usize {
        self.workers.max(1) * DEPTH
    }

    /// Jobs started and not yet collected.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Jobs on the worker threads (not yet collected).
    pub fn handed_off(&self) -> usize {
        self.handed_off
    }

    /// Starts `job`: for a worker (handed over by the next [`Pool::hand_off`]), or inline
    /// (processed now; the result is collected by [`Pool::completed`]) when there are no
    /// workers, or none is left. Returns whether it was processed inline.
    pub fn submit(&mut self, job: Job, known: Known) -> bool {
        self.in_flight += 1;
        if self.workers > 0 {
            self.staged.push((job, known));
            self.handed_off += 1;
            return false;
        }
        let processed = self.processor.process(job, known, monotonic_usec());
        self.inline_done.push(processed);
        true
    }

    /// Hands the jobs submitted since the last call to the workers: one lock, and a wake-up
    /// only for workers that are idle. Returns whether it processed them inline instead (no
    /// worker is left), to be collected by [`Pool::completed`].
    pub fn hand_off(&mut self) -> bool {
        if self.staged.is_empty() {
            return false;
        }
        let mut jobs = lock(&self.shared.jobs);
        if jobs.alive == 0 {
            drop(jobs);
            for (job, known) in std::mem::take(&mut self.staged) {
                self.handed_off -= 1;
                let processed = self.processor.process(job, known, monotonic_usec());
                self.inline_done.push(processed);
            }
            return true;
        }
        let wake = jobs.idle.min(self.staged.len());
        jobs.queue.extend(self.staged.drain(..));
        drop(jobs);
        for _ in 0..wake {
            self.shared.job_ready.notify_one();
        }
        false
    }

    /// Moves every finished job to the end of `done`. `woken`: the eventfd said so (it is
    /// reset then; otherwise it is left for the event loop, which costs at most one extra
    /// turn). The lists keep their capacity: no allocation per event.
    pub fn completed_into(&mut self, woken: bool, done: &mut Vec<Processed>) {
        let before = done.len();
        done.append(&mut self.inline_done);
        if self.workers > 0 && (woken || self.handed_off > 0) {
            if woken {
                // Reset before taking the list: a completion that lands after the take
                // signals again.
                let mut buf = [0u8; 8];
                let _ = rustix::io::read(&*self.wake, &mut buf);
            }
            let from_workers = done.len();
            done.append(&mut lock(&self.shared.done));
            self.handed_off -= done.len() - from_workers;
        }
        self.in_flight -= done.len() - before;
    }

    /// Every finished job, in a fresh list (tests).
    #[cfg(test)]
    fn completed(&mut self, woken: bool) -> Vec<Processed> {
        let mut done = Vec::new();
        self.completed_into(woken, &mut done);
        done
    }

    /// The processor (for reloads and reconcile checks).
    pub fn processor(&self) -> &Arc<Processor<F>> {
        &self.processor
    }
}

/// Waits for the next job; `None` when the pool closes.
fn next_job(shared: &Shared) -> Option<Work> {
    let mut jobs = lock(&shared.jobs);
    loop {
        if let Some(work) = jobs.queue.pop_front() {
            return Some(work);
        }
        if jobs.closed {
            return None;
        }
        jobs.idle += 1;
        jobs = shared
            .job_ready
            .wait(jobs)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        jobs.idle -= 1;
    }
}

impl<F> AsFd for Pool<F> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }
}

impl<F> Pool<F> {
    /// Closes the job queue and waits for every worker to leave.
    fn stop_workers(&mut self) {
        lock(&self.shared.jobs).closed = true;
        self.shared.job_ready.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl<F> Drop for Pool<F> {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::db::Db;
    use crate::daemon::nodes::DirFs;
    use crate::daemon::policy::KernelDefaults;
    use crate::daemon::queue::Origin;
    use uevd_wire::{Action, UeventBuilder};

    fn pool(workers: usize) -> (tempfile::TempDir, Pool<DirFs>) {
        pool_with(workers, Arc::new(KernelDefaults))
    }

    fn pool_with(
        workers: usize,
        policy: Arc<dyn crate::daemon::policy::Policy>,
    ) -> (tempfile::TempDir, Pool<DirFs>) {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("dev");
        std::fs::create_dir(&dev).unwrap();
        let processor = Processor::new(
            policy,
            DirFs::open(&dev).unwrap(),
            Db::open(&dir.path().join("run")).unwrap(),
            None,
        );
        (dir, Pool::new(Arc::new(processor), workers).unwrap())
    }

    /// A node-less event (no mknod, so no root needed).
    fn job(id: u64) -> Job {
        let event = UeventBuilder::new(Action::Add, &format!("/devices/virtual/t/d{id}"), "t")
            .seqnum(id + 1)
            .build()
            .unwrap();
        Job {
            id,
            event,
            origin: Origin::Kernel,
            snapshot: None,
        }
    }

    /// Whether `fd` becomes readable within `secs` seconds.
    fn readable_within(fd: BorrowedFd<'_>, secs: i64) -> bool {
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::time::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        };
        rustix::event::poll(&mut fds, Some(&timeout)).unwrap() == 1
    }

    #[test]
    fn handed_off_jobs_all_come_back_once_through_the_eventfd() {
        let (_dir, mut pool) = pool(2);
        let mut next = 0;
        let mut seen = Vec::new();
        while seen.len() < 1000 {
            while next < 1000 && pool.has_capacity() {
                assert!(!pool.submit(job(next), Known::default()), "handed off");
                next += 1;
            }
            assert!(!pool.hand_off());
            assert!(pool.handed_off() <= 2 * DEPTH);
            assert!(readable_within(pool.as_fd(), 10));
            seen.extend(pool.completed(true).into_iter().map(|p| p.id));
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        assert_eq!((pool.in_flight(), pool.handed_off()), (0, 0));
        // Every completion was taken, and the eventfd is left reset or reset by one more
        // collection: the event loop cannot spin on it.
        let _ = pool.completed(true);
        assert!(!readable_within(pool.as_fd(), 0));
    }

    #[test]
    fn restarted_workers_are_new_threads_and_take_jobs() {
        let (_dir, mut pool) = pool(2);
        let ids = |pool: &Pool<DirFs>| -> Vec<std::thread::ThreadId> {
            pool.threads.iter().map(|t| t.thread().id()).collect()
        };
        let before = ids(&pool);
        pool.restart_workers().unwrap();
        let after = ids(&pool);
        assert_eq!(after.len(), 2);
        assert!(
            after.iter().all(|id| !before.contains(id)),
            "{before:?} {after:?}"
        );
        assert!(!pool.submit(job(1), Known::default()), "handed off");
        assert!(!pool.hand_off());
        assert!(readable_within(pool.as_fd(), 10));
        let done = pool.completed(true);
        assert_eq!(done.iter().map(|p| p.id).collect::<Vec<_>>(), [1]);
        assert_eq!(lock(&pool.shared.jobs).alive, 2);
    }

    /// Takes 300 ms per event.
    struct Slow;

    impl crate::daemon::policy::Policy for Slow {
        fn decide(
            &self,
            event: &uevd_wire::Uevent,
            context: &crate::daemon::policy::Context,
        ) -> crate::daemon::policy::Decision {
            std::thread::sleep(std::time::Duration::from_millis(300));
            KernelDefaults.decide(event, context)
        }

        fn describe(&self) -> String {
            "slow".into()
        }
    }

    #[test]
    fn a_busy_worker_wakes_the_event_thread_once_its_queue_is_empty() {
        let (_dir, mut pool) = pool_with(1, Arc::new(Slow));
        for id in 0..3 {
            assert!(!pool.submit(job(id), Known::default()));
        }
        assert!(!pool.hand_off());
        // The first completion comes at 300 ms, with two jobs still queued behind it: no
        // wake-up for it (the eventfd used to fire for every completion the event thread
        // had not yet taken, one wake-up per event in a burst).
        assert!(!readable_within(pool.as_fd(), 0));
        std::thread::sleep(std::time::Duration::from_millis(450));
        assert!(!readable_within(pool.as_fd(), 0));
        // The last one empties the queue and signals.
        assert!(readable_within(pool.as_fd(), 10));
        let done = pool.completed(true);
        assert!(!done.is_empty());
        let mut seen: Vec<u64> = done.iter().map(|p| p.id).collect();
        while seen.len() < 3 {
            assert!(readable_within(pool.as_fd(), 10));
            seen.extend(pool.completed(true).iter().map(|p| p.id));
        }
        assert_eq!(seen, [0, 1, 2]);
    }

    #[test]
    fn without_workers_jobs_are_done_at_once() {
        let (_dir, mut pool) = pool(0);
        assert!(pool.submit(job(7), Known::default()));
        assert_eq!(pool.in_flight(), 1);
        let done = pool.completed(false);
        assert_eq!(done.iter().map(|p| p.id).collect::<Vec<_>>(), [7]);
        assert_eq!(pool.in_flight(), 0);
    }
}
