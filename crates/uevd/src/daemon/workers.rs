//! The worker pool: processes events in parallel, reports completions through an eventfd.
//!
//! With zero workers, events are processed inline on the main thread: no hand-off cost, which
//! is what a small system with the built-in policy wants. Workers pay two thread hand-offs per
//! event and win when policy runs slow helpers.

use super::db::DeviceRecord;
use super::nodes::DevFs;
use super::process::{Processed, Processor};
use super::queue::Job;
use rustix::event::{eventfd, EventfdFlags};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

type Work = (Job, Option<Arc<DeviceRecord>>);

/// Jobs handed to the pool at most, per worker: enough that workers never wait for the
/// main thread during a burst.
const DEPTH: usize = 32;

/// Runs [`Processor::process`] inline or on threads.
pub struct Pool<F> {
    processor: Arc<Processor<F>>,
    workers: usize,
    in_flight: usize,
    jobs: Option<Sender<Work>>,
    done: Receiver<Processed>,
    done_tx: Sender<Processed>,
    wake: Arc<OwnedFd>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// CLOCK_MONOTONIC in µs: when a device was first initialised.
pub fn monotonic_usec() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

impl<F: DevFs + 'static> Pool<F> {
    /// Starts `workers` threads (none: inline processing).
    pub fn new(processor: Arc<Processor<F>>, workers: usize) -> std::io::Result<Pool<F>> {
        let wake = Arc::new(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?);
        let (done_tx, done) = mpsc::channel();
        let mut pool = Pool {
            processor,
            workers,
            in_flight: 0,
            jobs: None,
            done,
            done_tx,
            wake,
            threads: Vec::new(),
        };
        if workers > 0 {
            let (jobs_tx, jobs_rx) = mpsc::channel::<Work>();
            let jobs_rx = Arc::new(Mutex::new(jobs_rx));
            for i in 0..workers {
                let rx = Arc::clone(&jobs_rx);
                let tx = pool.done_tx.clone();
                let processor = Arc::clone(&pool.processor);
                let wake = Arc::clone(&pool.wake);
                let thread = std::thread::Builder::new()
                    .name(format!("uevd-worker-{i}"))
                    .spawn(move || loop {
                        let work = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok((job, previous)) = work else { return };
                        let processed = processor.process(job, previous, monotonic_usec());
                        if tx.send(processed).is_err() {
                            return;
                        }
                        let _ = rustix::io::write(&*wake, &1u64.to_ne_bytes());
                    })?;
                pool.threads.push(thread);
            }
            pool.jobs = Some(jobs_tx);
        }
        Ok(pool)
    }

    /// Whether another job can start now.
    pub fn has_capacity(&self) -> bool {
        self.in_flight < self.workers.max(1) * DEPTH
    }

    /// Jobs started and not yet collected.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Starts `job` (inline: processes it now; the result is collected by [`Pool::completed`]).
    pub fn submit(&mut self, job: Job, previous: Option<Arc<DeviceRecord>>) {
        self.in_flight += 1;
        match &self.jobs {
            Some(jobs) => {
                if let Err(mpsc::SendError((job, previous))) = jobs.send((job, previous)) {
                    // All workers are gone (a worker panicked): carry on inline.
                    let processed = self.processor.process(job, previous, monotonic_usec());
                    let _ = self.done_tx.send(processed);
                }
            }
            None => {
                let processed = self.processor.process(job, previous, monotonic_usec());
                let _ = self.done_tx.send(processed);
            }
        }
    }

    /// Collects every finished job.
    pub fn completed(&mut self) -> Vec<Processed> {
        if self.workers > 0 {
            let mut buf = [0u8; 8];
            let _ = rustix::io::read(&*self.wake, &mut buf);
        }
        let done: Vec<Processed> = self.done.try_iter().collect();
        self.in_flight -= done.len();
        done
    }

    /// The processor (for reloads and reconcile checks).
    pub fn processor(&self) -> &Arc<Processor<F>> {
        &self.processor
    }
}

impl<F> AsFd for Pool<F> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }
}

impl<F> Drop for Pool<F> {
    fn drop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
