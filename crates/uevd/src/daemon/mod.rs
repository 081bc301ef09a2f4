//! `uevd daemon`: the device manager.
//!
//! One thread runs an epoll loop with one handler per source — the kernel listener, worker
//! completions, the control socket and its clients, termination signals. Events flow
//!
//! ```text
//! netlink ─▶ queue (ordering) ─▶ workers: policy ─▶ nodes/db ─▶ processed (watchers, publishers)
//!              ▲
//!   coldplug / resync (sysfs walk ─▶ reconcile)
//! ```

pub mod db;
pub mod hash;
pub mod helpers;
pub mod links;
pub mod mac;
pub mod nodes;
pub mod policy;
pub mod process;
pub mod queue;
pub mod reconcile;
pub mod rules;
mod server;
pub mod static_nodes;
pub mod watch;
pub mod workers;

use crate::host::SysfsSnapshot;
use crate::signals::Termination;
use crate::{debug, error, info, warn};
use db::{Db, DeviceRecord};
use hash::FastHash;
use nodes::{DevFs, DirFs, FileKind};
use policy::Policy;
use process::{Known, Processed, Processor};
use queue::{Origin, Queue};
use reconcile::{Reconciler, Summary};
use rustix::event::epoll;
use rustix::fd::{AsFd, OwnedFd};
use server::{ControlServer, ServerAction};
use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uevd_netlink::{KernelListener, ListenerOptions, Severity};
use uevd_sysfs::Sysfs;
use uevd_wire::Uevent;
use workers::Pool;

/// How the daemon is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where sysfs is mounted.
    pub sysfs: PathBuf,
    /// Where device nodes go.
    pub dev: PathBuf,
    /// Where the database and the control socket go.
    pub run: PathBuf,
    /// Worker threads; 0 processes events on the event-loop thread.
    pub workers: usize,
    /// Walk sysfs at start.
    pub coldplug: bool,
    /// Netlink receive buffer in bytes.
    pub recv_buffer: usize,
    /// Events parsed and queued at most; beyond this they wait in the kernel's receive buffer
    /// (which holds them in about 832 bytes each, against about 530 here).
    pub max_queued: usize,
    /// A descriptor to write a newline to when ready (s6-style readiness).
    pub ready_fd: Option<u32>,
    /// Handle SIGINT/SIGTERM (off when the daemon runs inside a test process).
    pub handle_signals: bool,
}

/// Counters, reported by `stats`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Kernel uevents accepted.
    pub received: u64,
    /// Events fully processed (kernel and synthesized).
    pub processed: u64,
    /// Messages refused because a process, not the kernel, sent them.
    pub rejected_senders: u64,
    /// Kernel messages that were not valid uevents.
    pub malformed: u64,
    /// Receive-buffer overflows.
    pub overflows: u64,
    /// Resyncs from sysfs after overflows.
    pub resyncs: u64,
    /// Node names refused as unsafe.
    pub refused_nodes: u64,
    /// Events that met any error.
    pub errors: u64,
    /// Times memory was handed back to the kernel (once after coldplug, then after bursts).
    pub memory_releases: u64,
    /// Overflows keep recurring; resyncs are rate-limited.
    pub degraded: bool,
}

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Setting up failed.
    #[error("cannot start: {what}: {source}")]
    Setup {
        /// What was being set up.
        what: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The kernel socket failed.
    #[error(transparent)]
    Recv(#[from] uevd_netlink::RecvError),
    /// epoll failed.
    #[error("event loop failed: {0}")]
    Poll(rustix::io::Errno),
    /// The thread loading the rules died.
    #[error("loading the rules failed: the loader thread panicked")]
    PolicyLoader,
}

fn setup<E: std::error::Error + Send + Sync + 'static>(
    what: impl Into<String>,
) -> impl FnOnce(E) -> DaemonError {
    let what = what.into();
    move |e| DaemonError::Setup {
        what,
        source: Box::new(e),
    }
}

/// Builds the policy at start. It runs on its own thread while the daemon walks sysfs for the
/// coldplug (reading and compiling a distribution's rule files takes a few milliseconds).
pub type LoadPolicy = Box<dyn FnOnce() -> Arc<dyn Policy> + Send>;

/// Rebuilds the policy on `reload`.
pub type Reload = Box<dyn Fn() -> Result<Arc<dyn Policy>, String> + Send>;

const LISTENER: u64 = 0;
const SIGNALS: u64 = 1;
const WORKERS: u64 = 2;
const CONTROL: u64 = 3;
const WATCHES: u64 = 4;
/// Control client tokens start here.
const CLIENTS: u64 = 16;
/// Running helpers' pidfd tokens start here (above any client token).
const HELPERS: u64 = 1 << 40;

/// How often, at most, the rule files are compared with what the policy was read from (udevd
/// waits 3 s between its checks too): each look lists the rule directories and stats every
/// file.
const RULES_CHECK_EVERY: Duration = Duration::from_secs(3);

/// Going idle after this many events since the last time returns free memory to the kernel.
const TRIM_AFTER: u64 = 4096;
/// How long the daemon stays idle after such a burst before handing memory back: a burst often
/// comes in waves, and memory handed back between two waves (with the first wave's devices
/// still live) is taken again.
const TRIM_QUIET: Duration = Duration::from_secs(1);
/// After the database failed to write (a full disk), wait this long before trying again.
const DB_RETRY: Duration = Duration::from_secs(5);
/// Overflows within this window count towards "degraded".
const OVERFLOW_WINDOW: Duration = Duration::from_secs(10);
/// This many overflows within the window make the daemon degraded.
const DEGRADED_AFTER: usize = 3;
/// While degraded, resyncs run at most this often.
const DEGRADED_RESYNC_INTERVAL: Duration = Duration::from_secs(5);
/// Without overflows for this long, the daemon is no longer degraded.
const RECOVERY: Duration = Duration::from_secs(60);
/// Workers wake the event thread once per batch of completions; while jobs are out, it also
/// looks for finished ones this often, so that a fast event does not wait for a slow
/// unrelated one queued on the same worker.
/// Rejected or malformed datagrams are logged this many times per window.
const BAD_INPUT_LOGGED: u32 = 10;
/// The window for [`BAD_INPUT_LOGGED`].
const BAD_INPUT_WINDOW: Duration = Duration::from_secs(10);
/// How long the control socket is left alone after accepting failed for want of descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Running out of descriptors is logged at most this often.
const FDS_WARN_EVERY: Duration = Duration::from_secs(10);
const COLLECT_EVERY: Duration = Duration::from_millis(2);
/// Bytes of the kernel's receive buffer one queued uevent takes (measured: ~832).
const KERNEL_BYTES_PER_EVENT: usize = 1024;

/// The running daemon.
struct Daemon {
    config: Config,
    /// Rejected or malformed datagrams: (window start, logged, not logged) in this window.
    bad_input_log: Option<(Instant, u32, u64)>,
    /// Not watching the control socket until then: the process ran out of descriptors.
    accept_paused_until: Option<Instant>,
    /// When running out of descriptors was last logged.
    fds_warned: Option<Instant>,
    /// `--ready-fd`, until readiness is written to it (then closed).
    ready_fd: Option<OwnedFd>,
    stats: Stats,
    queue: Queue,
    pool: Pool<DirFs>,
    listener: KernelListener,
    sysfs: Sysfs,
    known: HashMap<String, Arc<DeviceRecord>, FastHash>,
    /// Finished jobs being collected; kept between turns for its capacity.
    done: Vec<Processed>,
    /// The policy still being loaded at start ([`LoadPolicy`]).
    loading: Option<std::thread::JoinHandle<Arc<dyn Policy>>>,
    /// The policy reads ancestors' records ([`policy::Policy::reads_ancestors`]).
    ancestors_wanted: bool,
    /// The policy reads parent devices ([`policy::Policy::reads_parents`]).
    parents_wanted: bool,
    watches: Option<watch::NodeWatches>,
    /// `stats.processed` when memory was last handed back.
    processed_at_trim: u64,
    /// When to hand memory back if the daemon is still idle then ([`TRIM_QUIET`]), and
    /// `stats.processed` when that was decided (only new events move the time).
    trim_due: Option<(Instant, u64)>,
    /// Return from the event loop to hand memory back ([`Turn::ReleaseMemory`]).
    release_wanted: bool,
    /// Events whose `RUN` helpers are running, by the running helper's token.
    chains: HashMap<u64, helpers::Chain<Processed>>,
    next_helper: u64,
    /// UUIDs of the synthetic changes the watches asked for (newest last, bounded).
    watch_uuids: std::collections::VecDeque<String>,
    server: ControlServer,
    epoll: rustix::fd::OwnedFd,
    reload: Reload,
    /// When the rule files were last compared with what the policy was read from.
    rules_checked: Instant,
    ready: bool,
    stopping: bool,
    listener_paused: bool,
    /// The last read of the kernel's socket stopped before finding it empty.
    kernel_backlog: bool,
    started: Instant,
    overflow_times: Vec<Instant>,
    last_resync: Option<Instant>,
    resync_due: Option<Instant>,
    /// The database failed to write; do not try again before this.
    db_retry_at: Option<Instant>,
}

/// Runs the daemon until SIGTERM/SIGINT or `exit`.
pub fn run(config: Config, policy: LoadPolicy, reload: Reload) -> Result<(), DaemonError> {
    let started = Instant::now();
    let loading = std::thread::Builder::new()
        .name("uevd-rules".into())
        .spawn(policy)
        .map_err(setup("starting the rule loader"))?;
    // Nodes are created with exactly the mode policy says; everything else gets explicit modes.
    rustix::process::umask(rustix::fs::Mode::empty());
    for dir in [&config.run, &config.dev] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(setup(format!("creating {}", dir.display())))?;
    }
    let ready = config
        .ready_fd
        .map(|fd| take_ready_fd(fd).map_err(setup(format!("--ready-fd {fd}"))))
        .transpose()?;
    let db = Db::open(&config.run).map_err(setup("opening the device database"))?;
    let (records, corrupt) = db
        .load_all()
        .map_err(setup("reading the device database"))?;
    for e in &corrupt {
        warn!("{e}; ignoring it (coldplug will rebuild the device)");
    }
    let known: HashMap<String, Arc<DeviceRecord>, FastHash> = records
        .into_iter()
        .map(|r| (r.devpath.clone(), Arc::new(r)))
        .collect();
    let fs =
        DirFs::open(&config.dev).map_err(setup(format!("opening {}", config.dev.display())))?;
    let links = match links::LinkClaims::open(&config.run) {
        Ok(l) => Some(l),
        Err(e) => {
            error!(
                "{}: cannot keep symlink claims ({e}); the last device to claim a link gets it",
                config.run.join("links").display()
            );
            None
        }
    };
    // No event is processed before the real policy is in place (see `await_policy`).
    let placeholder: Arc<dyn Policy> = Arc::new(policy::KernelDefaults);
    let mac = mac::Mac::detect(&config.sysfs);
    if mac != mac::Mac::default() {
        info!("security labels (SECLABEL) for: {mac:?}");
    }
    let processor = Arc::new(Processor::new(placeholder, fs, db, links).with_mac(mac));
    let pool = Pool::new(processor, config.workers).map_err(setup("starting workers"))?;
    let listener = KernelListener::open(&ListenerOptions {
        recv_buffer: config.recv_buffer,
        nonblocking: true,
    })
    .map_err(setup("opening the kernel uevent socket"))?;
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(DaemonError::Poll)?;
    let server = ControlServer::new(&config.run);
    // A stale socket from a previous run would make clients think we are ready.
    let _ = std::fs::remove_file(server.path());

    let mut watches = match watch::NodeWatches::new(&config.dev, &config.sysfs) {
        Ok(w) => Some(w),
        Err(e) => {
            error!("cannot watch device nodes (inotify: {e}); OPTIONS+=\"watch\" is ignored");
            None
        }
    };
    if let Some(w) = &mut watches {
        for (devpath, record) in &known {
            if let Err(e) = w.update(devpath, Some(record)) {
                warn!("{devpath}: cannot watch its node again: {e}");
            }
        }
    }

    let mut daemon = Daemon {
        bad_input_log: None,
        accept_paused_until: None,
        fds_warned: None,
        ready_fd: ready,
        sysfs: Sysfs::new(&config.sysfs),
        loading: Some(loading),
        ancestors_wanted: false,
        parents_wanted: false,
        watches,
        watch_uuids: std::collections::VecDeque::new(),
        chains: HashMap::new(),
        next_helper: HELPERS,
        processed_at_trim: 0,
        trim_due: None,
        release_wanted: false,
        config,
        stats: Stats::default(),
        queue: Queue::new(),
        pool,
        listener,
        known,
        done: Vec::new(),
        server,
        epoll,
        reload,
        rules_checked: Instant::now(),
        ready: false,
        stopping: false,
        listener_paused: false,
        kernel_backlog: false,
        started,
        overflow_times: Vec::new(),
        last_resync: None,
        resync_due: None,
        db_retry_at: None,
    };
    let mut term = if daemon.config.handle_signals {
        Some(Termination::install().map_err(setup("installing signal handlers"))?)
    } else {
        None
    };
    daemon.watch(&daemon.listener, LISTENER)?;
    daemon.watch(&daemon.pool, WORKERS)?;
    if let Some(term) = &term {
        daemon.watch(term, SIGNALS)?;
    }
    if let Some(w) = &daemon.watches {
        daemon.watch(w, WATCHES)?;
    }
    info!(
        "listening to kernel uevents (receive buffer {} bytes), {} worker(s)",
        daemon.listener.recv_buffer(),
        daemon.config.workers
    );
    if daemon.config.coldplug {
        daemon.sync_with_sysfs(Origin::Coldplug)?;
    }
    daemon.await_policy()?;
    // The event loop runs on a thread of its own, and a fresh one after each burst: glibc
    // keeps a cache of freed chunks per thread, which `malloc_trim` leaves alone and which
    // pins pages all over the heap (+0.8 MiB after a 1M-event burst); a thread's cache goes
    // back to the heap when the thread ends. Starting and joining a thread costs ~80 µs here,
    // once per burst; if the system cannot start one, the loop runs on this thread instead.
    let result = loop {
        let threaded = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("uevd-events".into())
                .spawn_scoped(scope, || daemon.event_loop(&mut term))
                .map(|thread| {
                    thread
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
        });
        let turn = threaded.unwrap_or_else(|e| {
            warn!("cannot start the event thread ({e}): running the events here");
            daemon.event_loop(&mut term)
        });
        match turn {
            Ok(Turn::ReleaseMemory) => daemon.release_memory(),
            Ok(Turn::Exit) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    daemon.server.close();
    result
}

/// A coldplug or resync under way.
struct SysfsSync {
    origin: Origin,
    /// The diff against the processed state, device by device.
    diff: Reconciler,
    /// The devices walked so far, for the rules of the walk's events.
    snapshot: Arc<SysfsSnapshot>,
    /// The kernel's seqnum when the walk started: the walk's events carry it.
    seqnum: u64,
    /// Kernel events that arrived during the walk, queued after it.
    held: Vec<Uevent>,
    /// Receive errors met meanwhile (an overflow), handled after it.
    recv_errors: Vec<uevd_netlink::RecvError>,
}

/// Why the event loop returned.
enum Turn {
    /// SIGTERM, SIGINT or `exit`, and everything in flight is done.
    Exit,
    /// Idle after a burst: time to hand memory back, from a fresh thread.
    ReleaseMemory,
}

impl Daemon {
    fn watch(&self, fd: &impl AsFd, token: u64) -> Result<(), DaemonError> {
        epoll::add(
            &self.epoll,
            fd,
            epoll::EventData::new_u64(token),
            epoll::EventFlags::IN,
        )
        .map_err(DaemonError::Poll)
    }

    fn event_loop(&mut self, term: &mut Option<Termination>) -> Result<Turn, DaemonError> {
        let mut events = Vec::with_capacity(64);
        loop {
            self.dispatch();
            self.after_progress()?;
            if std::mem::take(&mut self.release_wanted) {
                return Ok(Turn::ReleaseMemory);
            }
            if self.stopping && self.pool.in_flight() == 0 && self.chains.is_empty() {
                info!(
                    "exiting: {} event(s) processed, {} left unprocessed (the next start reconciles them)",
                    self.stats.processed,
                    self.queue.pending()
                );
                return Ok(Turn::Exit);
            }
            let helper_due = self
                .chains
                .values()
                .filter_map(|c| c.running.as_ref())
                .map(|r| r.deadline())
                .min();
            // Events left in the kernel's buffer when the queue filled are read as soon as it
            // has room (after_progress reads them), without waiting for anything to happen.
            let read_more = (self.listener_paused && self.wants_kernel_events() && !self.stopping)
                .then(Instant::now);
            let collect = (self.pool.handed_off() > 0).then(|| Instant::now() + COLLECT_EVERY);
            let due = [
                self.resync_due,
                self.db_retry_at,
                helper_due,
                self.trim_due.map(|(due, _)| due),
                read_more,
                collect,
                self.accept_paused_until,
                self.server.idle_deadline(),
            ]
            .into_iter()
            .flatten()
            .min();
            let timeout = due.map(|due| {
                let left = due.saturating_duration_since(Instant::now());
                rustix::time::Timespec {
                    tv_sec: left.as_secs() as i64,
                    tv_nsec: i64::from(left.subsec_nanos()),
                }
            });
            events.clear();
            match epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                timeout.as_ref(),
            ) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(DaemonError::Poll(e)),
            }
            for event in &events {
                match event.data.u64() {
                    LISTENER => {
                        self.reload_if_rules_changed();
                        self.drain_kernel()?;
                    }
                    WORKERS => self.collect(true),
                    SIGNALS => {
                        if term.as_mut().is_some_and(Termination::fired) {
                            info!("termination signal: finishing in-flight events");
                            self.stopping = true;
                        }
                    }
                    CONTROL => self.accept(),
                    WATCHES => self.node_closed(),
                    token if token >= HELPERS => self.helper_exited(token),
                    token => {
                        // Like udevd's idle-priority control handler: uevents already in the
                        // socket are queued before a request (settle!) is answered.
                        self.drain_kernel()?;
                        self.dispatch();
                        // What a reply reports as done is in the database first.
                        self.persist();
                        self.client_ready(token);
                    }
                }
            }
            if self.pool.handed_off() > 0 {
                self.collect(false);
            }
            self.helper_deadlines();
            self.control_timers()?;
            if self.resync_due.is_some_and(|due| due <= Instant::now()) {
                self.resync_due = None;
                self.sync_with_sysfs(Origin::Resync)?;
            }
            if self.trim_due.is_some_and(|(due, _)| due <= Instant::now()) {
                self.trim_due = None;
                if self.is_idle() {
                    return Ok(Turn::ReleaseMemory);
                }
            }
        }
    }

    /// Starts every runnable event the pool has room for.
    fn dispatch(&mut self) {
        // A snapshot is taken when nothing is in flight; with workers busy through a long
        // burst, let them run dry first so the journal stays bounded.
        if self.pool.in_flight() > 0 && self.pool.processor().db().needs_snapshot(self.known.len())
        {
            return;
        }
        loop {
            while !self.stopping && self.pool.has_capacity() {
                let Some(job) = self.queue.next_runnable() else {
                    break;
                };
                let (devpath, old) = (job.event.devpath(), job.event.devpath_old());
                let known = Known {
                    previous: self.known.get(old.unwrap_or(devpath)).cloned(),
                    displaced: match old {
                        Some(old) if old != devpath => displaced(&self.known, old, devpath),
                        _ => Vec::new(),
                    },
                    ancestors: if self.ancestors_wanted {
                        ancestors(&self.known, devpath)
                    } else {
                        Vec::new()
                    },
                };
                if self.pool.submit(job, known) {
                    // Done now: finish it before the next dispatch looks at the device state.
                    self.collect(false);
                }
            }
            if !self.pool.hand_off() {
                break;
            }
            // No worker was left to take them: they were processed here.
            self.collect(false);
        }
    }

    /// Handles finished events; `woken` when the workers' eventfd fired.
    fn collect(&mut self, woken: bool) {
        let mut done = std::mem::take(&mut self.done);
        self.pool.completed_into(woken, &mut done);
        for processed in done.drain(..) {
            self.finish(processed);
        }
        self.done = done;
    }

    fn finish(&mut self, mut p: Processed) {
        let devpath = p.event.devpath().to_owned();
        if let Some(old) = p.event.devpath_old() {
            self.known.remove(old);
            if let Some(w) = &mut self.watches {
                let _ = w.update(old, None);
            }
            // Undone by the processor (`Known::displaced`).
            for stale in &p.displaced {
                self.known.remove(stale);
                if let Some(w) = &mut self.watches {
                    let _ = w.update(stale, None);
                }
            }
            self.move_descendants(old, &devpath);
        }
        if let Some(w) = &mut self.watches {
            if let Err(e) = w.update(&devpath, p.record.as_deref()) {
                error!("{} {devpath}: cannot watch its node: {e}", p.event.action());
            }
        }
        match &p.record {
            Some(record) => {
                self.known.insert(devpath, Arc::clone(record));
            }
            None => {
                self.known.remove(&devpath);
            }
        }
        if p.helpers.is_empty() {
            self.complete(p);
        } else {
            let jobs = std::mem::take(&mut p.helpers);
            self.run_chain(helpers::Chain::new(p, jobs));
        }
    }

    /// A device moved from `old` to `new`: the devices below it moved with it (the kernel
    /// sends no event for them), so their records follow, in memory and in the database.
    fn move_descendants(&mut self, old: &str, new: &str) {
        let below: Vec<String> = self
            .known
            .keys()
            .filter(|k| uevd_sysfs::is_below(k, old))
            .cloned()
            .collect();
        for key in below {
            let Some(record) = self.known.remove(&key) else {
                continue;
            };
            let mut moved = (*record).clone();
            moved.devpath = format!("{new}{}", &key[old.len()..]);
            self.pool.processor().db().write(&moved.id(), &moved);
            if let Some(w) = &mut self.watches {
                let _ = w.update(&key, None);
                if let Err(e) = w.update(&moved.devpath, Some(&moved)) {
                    error!("{}: cannot watch its node: {e}", moved.devpath);
                }
            }
            self.known.insert(moved.devpath.clone(), Arc::new(moved));
        }
    }

    /// The event is fully done (helpers included): count it, log its problems, let related
    /// events run and tell watchers.
    fn complete(&mut self, p: Processed) {
        self.stats.processed += 1;
        if !p.errors.is_empty() {
            self.stats.errors += 1;
            for e in &p.errors {
                error!("{e}");
            }
        }
        if p.refused_node {
            self.stats.refused_nodes += 1;
        }
        // The device state is updated before the queue lets related events run.
        self.queue.finish(p.id);
        if crate::log::enabled(crate::log::Level::Debug) {
            debug!(
                "processed {} {} (seq {}, {:?})",
                p.event.action(),
                p.event.devpath(),
                p.event.seqnum(),
                p.origin
            );
        }
        if p.event.synth_uuid().is_some() {
            // `trigger --wait` hears of it next: its record is written first.
            self.persist();
        }
        self.server.processed(&p);
    }

    /// Starts the chain's next helper, or completes its event.
    fn run_chain(&mut self, mut chain: helpers::Chain<Processed>) {
        if !chain.advance() {
            let mut p = chain.payload;
            let ctx = format!("{} {}", p.event.action(), p.event.devpath());
            p.errors
                .extend(chain.errors.into_iter().map(|e| format!("{ctx}: RUN: {e}")));
            self.complete(p);
            return;
        }
        let token = self.next_helper;
        self.next_helper += 1;
        if let Some(running) = &chain.running {
            if let Err(e) = self.watch(running, token) {
                error!("cannot watch a helper: {e}; waiting for it");
            }
        }
        self.chains.insert(token, chain);
    }

    fn helper_exited(&mut self, token: u64) {
        let Some(mut chain) = self.chains.remove(&token) else {
            return;
        };
        let result = chain.running.as_mut().and_then(helpers::Running::poll);
        match result {
            None => {
                self.chains.insert(token, chain);
            }
            Some(result) => {
                if let Some(running) = chain.running.take() {
                    let _ = epoll::delete(&self.epoll, &running);
                }
                if let Err(e) = result {
                    chain.errors.push(e);
                }
                self.run_chain(chain);
            }
        }
    }

    /// A writer closed a watched node: ask the kernel for a synthetic `change`.
    fn node_closed(&mut self) {
        let Some(w) = &mut self.watches else { return };
        for devpath in w.closed_after_write() {
            let result = watch::new_uuid().and_then(|uuid| {
                w.request_change(&devpath, &uuid)?;
                Ok(uuid)
            });
            match result {
                Ok(uuid) => {
                    debug!("{devpath}: node closed after writing; requested change {uuid}");
                    if self.watch_uuids.len() >= 1024 {
                        self.watch_uuids.pop_front();
                    }
                    self.watch_uuids.push_back(uuid);
                }
                Err(e) => error!(
                    "{devpath}: node closed after writing, but requesting a change failed: {e}"
                ),
            }
        }
    }

    /// Kills helpers past their deadline and moves their chains on.
    fn helper_deadlines(&mut self) {
        let now = Instant::now();
        let late: Vec<u64> = self
            .chains
            .iter()
            .filter(|(_, c)| c.running.as_ref().is_some_and(|r| r.deadline() <= now))
            .map(|(t, _)| *t)
            .collect();
        for token in late {
            if let Some(mut chain) = self.chains.remove(&token) {
                if let Some(running) = chain.running.take() {
                    let _ = epoll::delete(&self.epoll, &running);
                    chain.errors.push(running.kill());
                }
                self.run_chain(chain);
            }
        }
    }

    /// Readiness, settle answers, and clearing the degraded state, after anything moved.
    fn after_progress(&mut self) -> Result<(), DaemonError> {
        self.persist();
        self.pool.processor().nodes().fs().forget_dirs();
        if self.listener_paused && self.wants_kernel_events() && !self.stopping {
            self.pause_listener(false)?;
            self.drain_kernel()?;
            self.dispatch();
        } else if self.pool_saturated() {
            // Each event arriving now would wake this thread for nothing: it could not be
            // handed to a worker before the next batch of completions anyway.
            self.pause_listener(true)?;
        }
        let idle = self.is_idle();
        // Ready once the coldplug is done, and then give its memory back at once (the
        // biggest burst of a boot); after any other burst (many events since the last time),
        // once it has been quiet a while.
        if idle && !self.ready && !self.stopping {
            self.become_ready()?;
            self.release_wanted = true;
        } else if idle
            && self.stats.processed >= self.processed_at_trim + TRIM_AFTER
            && self
                .trim_due
                .is_none_or(|(_, at)| at != self.stats.processed)
        {
            self.trim_due = Some((Instant::now() + TRIM_QUIET, self.stats.processed));
        }
        if idle {
            self.server.settled();
        }
        if self.stats.degraded
            && self
                .overflow_times
                .last()
                .is_none_or(|t| t.elapsed() > RECOVERY)
        {
            self.stats.degraded = false;
            info!("no overflow for {RECOVERY:?}: leaving the degraded state");
        }
        Ok(())
    }

    /// Nothing queued, in flight, waiting for helpers, left in the kernel's buffer (the
    /// queue was full, or one call read its limit), or lost and waiting for a resync.
    fn is_idle(&self) -> bool {
        // A resync still due means events were lost: what is processed is not the truth yet.
        self.resync_due.is_none()
            && !self.kernel_backlog
            && self.queue.is_idle()
            && self.pool.in_flight() == 0
            && self.chains.is_empty()
    }

    /// Whether to read the kernel's buffer (again): the queue has drained to half its limit,
    /// and the workers are not all busy with a refill already waiting.
    fn wants_kernel_events(&self) -> bool {
        self.queue.pending() < self.config.max_queued.max(1).div_ceil(2) && !self.pool_saturated()
    }

    /// Every worker has its fill of jobs and the queue holds at least as many again. (Never
    /// inline: there the pool always has room.) Only with a kernel buffer that holds a
    /// queue's worth: with a small one (`SO_RCVBUFFORCE` refused), reading on is what keeps a
    /// burst from overflowing it.
    fn pool_saturated(&self) -> bool {
        !self.pool.has_capacity()
            && self.queue.pending() >= self.pool.capacity()
            && self.listener.recv_buffer() >= self.config.max_queued.max(1) * KERNEL_BYTES_PER_EVENT
    }

    /// Returns what the last burst left behind: spare capacity, then the allocator's free pages.
    fn release_memory(&mut self) {
        // Worker threads keep allocator caches too (see `run`).
        if let Err(e) = self.pool.restart_workers() {
            warn!("cannot restart the worker threads ({e}): fewer workers from now on");
        }
        self.queue.shrink();
        self.known.shrink_to_fit();
        self.done.shrink_to_fit();
        self.pool.processor().db().release_buffer();
        crate::memory::release_free_memory();
        debug!(
            "idle after {} event(s): free memory handed back",
            self.stats.processed - self.processed_at_trim
        );
        self.processed_at_trim = self.stats.processed;
        self.stats.memory_releases += 1;
    }

    /// Writes the database entries of the events processed since the last time (one system
    /// call), and compacts the journal into a snapshot when it has grown.
    fn persist(&mut self) {
        if self.db_retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.db_retry_at = None;
        let db = self.pool.processor().db();
        if let Err(e) = db.flush() {
            self.stats.errors += 1;
            error!("{e}; keeping the entries to try again in {DB_RETRY:?}");
            self.db_retry_at = Some(Instant::now() + DB_RETRY);
            return;
        }
        if self.pool.in_flight() == 0 && db.needs_snapshot(self.known.len()) {
            let started = Instant::now();
            match db.snapshot(self.known.values().map(|r| &**r)) {
                Ok(()) => debug!(
                    "database: snapshot of {} record(s) in {:?}",
                    self.known.len(),
                    started.elapsed()
                ),
                Err(e) => {
                    self.stats.errors += 1;
                    error!("{e}; the journal keeps growing; trying again in {DB_RETRY:?}");
                    self.db_retry_at = Some(Instant::now() + DB_RETRY);
                }
            }
        }
    }

    fn become_ready(&mut self) -> Result<(), DaemonError> {
        self.server
            .bind()
            .map_err(setup(format!("binding {}", self.server.path().display())))?;
        self.watch_control()?;
        self.ready = true;
        info!(
            "ready after {:?}: {} device(s) known, control socket {}",
            self.started.elapsed(),
            self.known.len(),
            self.server.path().display()
        );
        // s6-style: one newline, then the descriptor is closed (the reader sees EOF).
        if let Some(fd) = self.ready_fd.take() {
            if let Err(e) = rustix::io::write(&fd, b"\n") {
                warn!("cannot signal readiness on --ready-fd: {e}");
            }
        }
        Ok(())
    }

    /// Reads pending kernel uevents into the queue (and, without workers, processes each at
    /// once), up to a queue's worth: the loop then persists, answers clients and checks its
    /// deadlines, and comes back at once (the socket is still readable).
    fn drain_kernel(&mut self) -> Result<(), DaemonError> {
        let limit = self.config.max_queued.max(1);
        self.kernel_backlog = true;
        for _ in 0..limit {
            if self.queue.pending() >= limit {
                // The kernel's receive buffer holds the rest of a burst: memory stays bounded.
                return self.pause_listener(true);
            }
            match self.listener.recv() {
                Ok(None) => {
                    self.kernel_backlog = false;
                    return Ok(());
                }
                Ok(Some(event)) => {
                    self.enqueue_kernel(event);
                    // Inline, each event is done before the next is read: its memory is
                    // reused for the next one while still in the cache and in glibc's
                    // per-thread cache (reading a whole batch first took ~5 % more
                    // instructions), and a lone event's node comes before the `recv` that
                    // finds the socket empty.
                    if self.config.workers == 0 {
                        self.dispatch();
                    }
                }
                Err(e) => self.recv_error(e)?,
            }
        }
        Ok(())
    }

    /// Stops (or resumes) watching the kernel socket while the queue is full, so a busy
    /// queue neither grows without bound nor makes epoll spin. The socket leaves the epoll set
    /// altogether: epoll reports a pending error (an overflow) whatever mask it is given, and
    /// only a `recv`, which a full queue forbids, would clear it.
    fn pause_listener(&mut self, pause: bool) -> Result<(), DaemonError> {
        if self.listener_paused != pause {
            if pause {
                epoll::delete(&self.epoll, &self.listener).map_err(DaemonError::Poll)?;
            } else {
                self.watch(&self.listener, LISTENER)?;
            }
            self.listener_paused = pause;
        }
        Ok(())
    }

    fn enqueue_kernel(&mut self, event: Uevent) {
        self.stats.received += 1;
        let event = self.mark_watch_event(event);
        if crate::log::enabled(crate::log::Level::Debug) {
            debug!(
                "received {} {} (seq {})",
                event.action(),
                event.devpath(),
                event.seqnum()
            );
        }
        self.queue.push(event, Origin::Kernel);
    }

    /// The kernel only accepts alphanumeric keys in synthetic arguments, so watches ask for
    /// `change <uuid> UDEVWATCH=1`. When that event comes back with a UUID this daemon issued,
    /// it gets `SYNTH_ARG_UDEV_WATCH=1` too — the property udev's rules look for — which no
    /// other writer of `uevent` files can obtain.
    fn mark_watch_event(&mut self, event: Uevent) -> Uevent {
        let Some(uuid) = event.synth_uuid() else {
            return event;
        };
        let Some(i) = self.watch_uuids.iter().position(|u| u == uuid) else {
            return event;
        };
        self.watch_uuids.remove(i);
        let mut b =
            uevd_wire::UeventBuilder::new(event.action(), event.devpath(), event.subsystem());
        for (k, v) in event.iter() {
            if !matches!(k, "ACTION" | "DEVPATH" | "SUBSYSTEM" | "SEQNUM") {
                b.var(k, v);
            }
        }
        b.var("SYNTH_ARG_UDEV_WATCH", "1");
        match b.seqnum(event.seqnum()).build() {
            Ok(marked) => marked,
            Err(e) => {
                warn!("{}: cannot mark the watch event: {e}", event.devpath());
                event
            }
        }
    }

    fn recv_error(&mut self, e: uevd_netlink::RecvError) -> Result<(), DaemonError> {
        match e.severity() {
            Severity::Recoverable => {
                match e {
                    uevd_netlink::RecvError::ForeignSender { .. } => {
                        self.stats.rejected_senders += 1
                    }
                    _ => self.stats.malformed += 1,
                }
                // A flood of foreign or malformed datagrams is counted in `stats`; the log
                // gets the first few of every window and then how many more there were.
                let now = Instant::now();
                let window = self.bad_input_log.get_or_insert((now, 0, 0));
                if now.duration_since(window.0) >= BAD_INPUT_WINDOW {
                    if window.2 > 0 {
                        warn!(
                            "{} more rejected or malformed message(s) in the last {:?} (counted in stats)",
                            window.2, BAD_INPUT_WINDOW
                        );
                    }
                    *window = (now, 0, 0);
                }
                if window.1 < BAD_INPUT_LOGGED {
                    window.1 += 1;
                    warn!("{e}");
                } else {
                    window.2 += 1;
                }
                Ok(())
            }
            Severity::NeedsResync => {
                self.overflow();
                Ok(())
            }
            Severity::Fatal => Err(e.into()),
        }
    }

    /// An overflow: schedule a resync, rate-limited when overflows keep coming.
    fn overflow(&mut self) {
        self.stats.overflows += 1;
        let now = Instant::now();
        self.overflow_times
            .retain(|t| now.duration_since(*t) < OVERFLOW_WINDOW);
        self.overflow_times.push(now);
        if !self.stats.degraded && self.overflow_times.len() >= DEGRADED_AFTER {
            self.stats.degraded = true;
            error!(
                "degraded: {} receive-buffer overflows within {OVERFLOW_WINDOW:?}; resyncing at most every {DEGRADED_RESYNC_INTERVAL:?}",
                self.overflow_times.len()
            );
        }
        let interval = if self.stats.degraded {
            DEGRADED_RESYNC_INTERVAL
        } else {
            Duration::ZERO
        };
        let earliest = self.last_resync.map_or(now, |t| t + interval);
        // Once per resync to come: while degraded, overflows are counted in `stats`, not
        // logged one by one.
        if self.resync_due.is_none() {
            warn!("kernel uevents were lost (receive buffer overflow); resyncing from sysfs");
        }
        self.resync_due = Some(
            self.resync_due
                .map_or(earliest, |d| d.min(earliest))
                .max(now),
        );
    }

    /// Walks sysfs and brings the processed state in line with it: coldplug at start, resync
    /// after an overflow. The walk runs on threads of its own and hands devices over in
    /// batches, parents first; each batch's events are queued and processed while the walk
    /// goes on. Kernel events read meanwhile are held, and queued after the walk's: the walk
    /// may have read a state older than they describe.
    fn sync_with_sysfs(&mut self, origin: Origin) -> Result<(), DaemonError> {
        let started = Instant::now();
        if origin == Origin::Resync {
            self.stats.resyncs += 1;
        }
        self.last_resync = Some(started);
        let mut sync = SysfsSync {
            origin,
            diff: Reconciler::new(&self.known),
            snapshot: Arc::new(SysfsSnapshot::default()),
            seqnum: self.sysfs.kernel_seqnum().unwrap_or(0),
            held: Vec::new(),
            recv_errors: Vec::new(),
        };
        let sysfs = self.sysfs.clone();
        let pool = uevd_sysfs::BatchPool::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let walk = std::thread::scope(|scope| -> Result<_, DaemonError> {
            let (sysfs, pool, to_walker) = (&sysfs, &pool, tx.clone());
            let walker = std::thread::Builder::new()
                .name("uevd-walk".into())
                .spawn_scoped(scope, move || {
                    yield_to_events();
                    sysfs.walk_batches(walk_threads(), pool, |b| to_walker.send(b).is_ok())
                });
            let walker = match walker {
                Ok(w) => w,
                Err(e) => {
                    warn!(
                        "cannot start a thread to walk sysfs ({e}): walking first, then processing"
                    );
                    let walk = sysfs.walk_batches(1, pool, |b| tx.send(b).is_ok());
                    drop(tx);
                    for batch in rx.iter() {
                        self.sync_batch(&mut sync, batch, pool)?;
                    }
                    return Ok(walk);
                }
            };
            drop(tx);
            // What is gone already is removed first (while the walk starts); the walk's
            // events follow.
            let sysfs = &self.sysfs;
            for record in sync.diff.vanished(&self.known, |p| sysfs.has_device(p)) {
                self.queue_removal(&record, origin, sync.seqnum);
            }
            loop {
                // While jobs are out on workers, wake up to collect them even if no batch comes.
                let next = if self.pool.handed_off() > 0 {
                    rx.recv_timeout(COLLECT_EVERY)
                } else {
                    rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
                };
                match next {
                    Ok(batch) => self.sync_batch(&mut sync, batch, pool)?,
                    Err(RecvTimeoutError::Timeout) => self.sync_progress(&mut sync),
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            Ok(walker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
        });
        let walk_stats = match walk? {
            Ok(s) => s,
            Err(e) => {
                error!("cannot walk {}: {e}", self.config.sysfs.display());
                return self.await_policy();
            }
        };
        self.await_policy()?;
        let (gone, summary) = sync.diff.finish(&self.known);
        for record in gone {
            self.queue_removal(&record, origin, sync.seqnum);
        }
        self.undo_stale_queued(origin, sync.seqnum);
        for event in sync.held {
            self.enqueue_kernel(event);
        }
        for e in sync.recv_errors {
            if let Err(fatal) = self.recv_error(e) {
                error!("{fatal}");
            }
        }
        log_sync(origin, &summary, &walk_stats, started.elapsed());
        Ok(())
    }

    /// Events queued before the walk for devices it did not find (their `remove` was among
    /// the lost events) would make stale nodes once they run: a `remove` is queued after each
    /// such device's last one.
    fn undo_stale_queued(&mut self, origin: Origin, seqnum: u64) {
        let mut seen = std::collections::HashSet::new();
        let mut stale = Vec::new();
        for job in self.queue.waiting().rev() {
            let event = &job.event;
            if job.origin == Origin::Kernel
                && event.action() != uevd_wire::Action::Remove
                && seen.insert(event.devpath().to_owned())
                && !self.sysfs.has_device(event.devpath())
            {
                stale.push(reconcile::removal_after(event, seqnum));
            }
        }
        for event in stale {
            match event {
                Ok(event) => {
                    self.queue.push_walked(event, origin, None);
                }
                Err(e) => warn!("{origin:?}: cannot synthesize a remove: {e}"),
            }
        }
    }

    /// Queues the `remove` of a device that vanished. Its parents are read live: it is not
    /// in the walk.
    fn queue_removal(&mut self, record: &DeviceRecord, origin: Origin, seqnum: u64) {
        match reconcile::removal(record, seqnum) {
            Ok(event) => {
                self.queue.push_walked(event, origin, None);
            }
            Err(e) => warn!(
                "{origin:?}: cannot synthesize the remove of {}: {e}",
                record.devpath
            ),
        }
    }

    /// Queues the events a batch of walked devices needs, then lets them run; the emptied
    /// batch goes back to the walkers' `pool`.
    fn sync_batch(
        &mut self,
        sync: &mut SysfsSync,
        mut batch: Vec<uevd_sysfs::Device>,
        pool: &uevd_sysfs::BatchPool,
    ) -> Result<(), DaemonError> {
        // The first batch waits for the rules being loaded (the walk goes on meanwhile).
        self.await_policy()?;
        let snapshot = self.parents_wanted.then(|| Arc::clone(&sync.snapshot));
        let nodes = self.pool.processor().nodes();
        let node_ok = |record: &DeviceRecord| match &record.node {
            None => true,
            Some(db::NodeRecord { spec: n, .. }) => matches!(
                nodes.fs().lstat(n.path.as_str()),
                Ok(Some(m)) if m.kind == FileKind::Node(n.kind) && m.devnum == n.devnum
                    && m.mode == n.mode && (m.uid, m.gid) == (n.uid, n.gid)
            ),
        };
        for device in &batch {
            let Some(action) = sync.diff.device(device, &self.known, node_ok) else {
                continue;
            };
            match device.to_uevent(action, sync.seqnum) {
                Ok(event) => {
                    self.queue
                        .push_walked(event, sync.origin, snapshot.as_ref().map(Arc::clone));
                }
                Err(e) => warn!(
                    "{:?}: cannot synthesize the {action} of {}: {e}",
                    sync.origin, device.devpath
                ),
            }
        }
        // Before any of the batch's events runs: its devices' children come in later batches.
        if snapshot.is_some() {
            sync.snapshot.extend(batch.drain(..));
        }
        pool.give_back(batch);
        self.sync_progress(sync);
        Ok(())
    }

    /// Holds the kernel events that arrived, and processes what is runnable.
    fn sync_progress(&mut self, sync: &mut SysfsSync) {
        loop {
            match self.listener.recv() {
                Ok(Some(e)) => sync.held.push(e),
                Ok(None) => break,
                Err(e) => {
                    sync.recv_errors.push(e);
                    break;
                }
            }
        }
        self.dispatch();
        if self.pool.handed_off() > 0 {
            self.collect(false);
        }
        self.persist();
        self.pool.processor().nodes().fs().forget_dirs();
    }

    /// Puts the policy being loaded at start in place (waiting for it), once.
    fn await_policy(&mut self) -> Result<(), DaemonError> {
        let Some(loading) = self.loading.take() else {
            return Ok(());
        };
        let policy = loading.join().map_err(|_| DaemonError::PolicyLoader)?;
        info!("policy: {}", policy.describe());
        self.install_policy(policy);
        Ok(())
    }

    /// Reloads the policy when its rule files changed on disk, as udevd does: looked at, at
    /// most every [`RULES_CHECK_EVERY`], when kernel events arrive (an idle daemon does not
    /// poll), so that after editing a rule file the next `trigger` sees the new rules.
    fn reload_if_rules_changed(&mut self) {
        if self.loading.is_some() || self.rules_checked.elapsed() < RULES_CHECK_EVERY {
            return;
        }
        self.rules_checked = Instant::now();
        if !self.pool.processor().policy().rules_changed() {
            return;
        }
        match (self.reload)() {
            Ok(policy) => {
                info!("rule files changed: reloaded: {}", policy.describe());
                self.install_policy(policy);
            }
            Err(e) => {
                error!("rule files changed, but reloading failed (keeping the current policy): {e}")
            }
        }
    }

    /// Makes `policy` decide the events dispatched from now on.
    fn install_policy(&mut self, policy: Arc<dyn Policy>) {
        self.ancestors_wanted = policy.reads_ancestors();
        self.parents_wanted = policy.reads_parents();
        self.apply_static_nodes(policy.static_nodes());
        self.pool.processor().set_policy(policy);
    }

    /// Applies the rules' `static_node=` permissions and tags (see [`static_nodes`]).
    fn apply_static_nodes(&self, wanted: &[uevd_rules::static_nodes::StaticNode]) {
        let tags = static_nodes::tags_dir(&self.config.run);
        if wanted.is_empty() && !tags.exists() {
            return;
        }
        // The links point at the nodes by absolute path, as udev's do.
        let dev =
            std::fs::canonicalize(&self.config.dev).unwrap_or_else(|_| self.config.dev.clone());
        let applied = static_nodes::apply(self.pool.processor().nodes(), &dev, &tags, wanted);
        for e in &applied.errors {
            error!("{e}");
        }
        if !wanted.is_empty() {
            info!(
                "static nodes: {} set, {} already right, {} absent; {} tag links",
                applied.changed, applied.unchanged, applied.missing, applied.tag_links
            );
        }
    }

    fn accept(&mut self) {
        let mut failed = Vec::new();
        let accepted = self.server.accept(CLIENTS);
        let out_of_fds = accepted.out_of_fds;
        for (fd, token) in accepted.clients {
            // Edge-triggered: the server reads until nothing is left, and hears when a client
            // that had answers waiting can take more.
            if let Err(e) = epoll::add(
                &self.epoll,
                fd,
                epoll::EventData::new_u64(token),
                epoll::EventFlags::IN | epoll::EventFlags::OUT | epoll::EventFlags::ET,
            ) {
                warn!("control: cannot watch a client: {e}");
                failed.push(token);
            }
        }
        for token in failed {
            self.server.drop_client(token);
        }
        if out_of_fds {
            // The pending connection would wake the loop at once, again and again: stop
            // watching the socket for a moment (clients wait in its backlog meanwhile).
            if let Some(fd) = self.server.listener_fd() {
                let _ = epoll::delete(&self.epoll, fd);
            }
            let now = Instant::now();
            if self
                .fds_warned
                .is_none_or(|t| now.duration_since(t) > FDS_WARN_EVERY)
            {
                self.fds_warned = Some(now);
                warn!("control: out of file descriptors; accepting again in {ACCEPT_PAUSE:?}");
            }
            self.accept_paused_until = Some(now + ACCEPT_PAUSE);
        }
    }

    /// Drops control clients that never sent a request, and watches the control socket
    /// again once a pause for want of descriptors is over.
    fn control_timers(&mut self) -> Result<(), DaemonError> {
        let now = Instant::now();
        self.server.drop_idle(now);
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
            self.watch_control()?;
        }
        Ok(())
    }

    /// Watches the control socket (once it is bound).
    fn watch_control(&self) -> Result<(), DaemonError> {
        match self.server.listener_fd() {
            Some(fd) => self.watch(&fd, CONTROL),
            None => Ok(()),
        }
    }

    fn client_ready(&mut self, token: u64) {
        let idle = self.is_idle();
        let stats = self.stats_lines();
        for action in self.server.read(token, idle, &stats) {
            match action {
                ServerAction::Exit => {
                    info!("exit requested: finishing in-flight events");
                    self.stopping = true;
                }
                ServerAction::Reload(reply) => {
                    let answer = match (self.reload)() {
                        Ok(policy) => {
                            let text = format!("ok reloaded: {}", policy.describe());
                            self.install_policy(policy);
                            info!("{}", &text[3..]);
                            text
                        }
                        Err(e) => {
                            error!("reload failed, keeping the current policy: {e}");
                            format!("error: {e}")
                        }
                    };
                    self.server.reply_and_close(reply, &answer);
                }
            }
        }
    }

    fn stats_lines(&self) -> Vec<String> {
        let s = &self.stats;
        let l = self.listener.stats();
        vec![
            format!("received {}", s.received),
            format!("processed {}", s.processed),
            format!("queued {}", self.queue.pending()),
            format!("in_flight {}", self.pool.in_flight() + self.chains.len()),
            format!("rejected_senders {}", s.rejected_senders.max(l.foreign)),
            format!("malformed {}", s.malformed),
            format!("overflows {}", s.overflows),
            format!("resyncs {}", s.resyncs),
            format!("refused_nodes {}", s.refused_nodes),
            format!("errors {}", s.errors),
            format!("devices {}", self.known.len()),
            format!("memory_releases {}", s.memory_releases),
            format!("degraded {}", u8::from(s.degraded)),
        ]
    }
}

/// The records of `devpath`'s ancestors that `known` holds, nearest first. (Related events
/// run in order, so an ancestor's record is current for every event below it.)
/// For a move from `old` to `new`: the records still kept at `new` or below it, deepest
/// first — devices whose `remove` was lost (see [`process::Known::displaced`]). Records below
/// `old` are the moved device's own children, which move with it. Moves are rare; this looks
/// at every record, as [`Daemon::move_descendants`] does.
fn displaced(
    known: &HashMap<String, Arc<DeviceRecord>, FastHash>,
    old: &str,
    new: &str,
) -> Vec<Arc<DeviceRecord>> {
    let mut found: Vec<Arc<DeviceRecord>> = known
        .iter()
        .filter(|(k, _)| {
            *k == new || (uevd_sysfs::is_below(k, new) && !uevd_sysfs::is_below(k, old))
        })
        .map(|(_, r)| Arc::clone(r))
        .collect();
    found.sort_by(|a, b| (b.devpath.len(), &a.devpath).cmp(&(a.devpath.len(), &b.devpath)));
    found
}

fn ancestors(
    known: &HashMap<String, Arc<DeviceRecord>, FastHash>,
    devpath: &str,
) -> Vec<Arc<DeviceRecord>> {
    let mut found = Vec::new();
    let mut path = devpath;
    while let Some((up, _)) = path.rsplit_once('/') {
        if up.is_empty() || up == "/devices" {
            break;
        }
        if let Some(record) = known.get(up) {
            found.push(Arc::clone(record));
        }
        path = up;
    }
    found
}

/// Takes over the `--ready-fd` descriptor: checks that it is open, and marks it
/// close-on-exec so that helpers never inherit it.
#[allow(unsafe_code)]
fn take_ready_fd(fd: u32) -> std::io::Result<OwnedFd> {
    let raw =
        i32::try_from(fd).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: `--ready-fd` hands this descriptor to the daemon for readiness alone; nothing
    // else in the process owns it. It is borrowed only for the check that it is open.
    let flags = rustix::io::fcntl_getfd(unsafe { rustix::fd::BorrowedFd::borrow_raw(raw) })?;
    // SAFETY: open (checked above) and owned by no one else (see above); from here on the
    // daemon owns it and closes it once readiness is written.
    let owned = unsafe { <OwnedFd as rustix::fd::FromRawFd>::from_raw_fd(raw) };
    rustix::io::fcntl_setfd(&owned, flags | rustix::io::FdFlags::CLOEXEC)?;
    Ok(owned)
}

/// How much nicer than the event thread the walk's threads run.
const WALK_NICENESS: i32 = 10;

/// Lowers the calling thread's priority by [`WALK_NICENESS`] (threads it starts inherit it).
///
/// The walk's threads (four on two cores) read sysfs faster than one event thread can make
/// nodes; at equal priority the scheduler gave the event thread a fair fifth of the cores, so
/// the walk finished early and the event thread worked through the backlog alone with a core
/// idle — a 100 000-device coldplug took 1.4 s in some runs and 1.1 s in others. Niced, the
/// walkers still take every cycle the event thread leaves, and a resync's walk never holds
/// up kernel events. A failure (a seccomp filter, say) leaves the walk as fast as before.
fn yield_to_events() {
    let me = Some(rustix::thread::gettid());
    if let Ok(nice) = rustix::process::getpriority_process(me) {
        let _ = rustix::process::setpriority_process(me, (nice + WALK_NICENESS).min(19));
    }
}

/// Threads that read sysfs during coldplug and resync: none besides the main one on a single
/// core, otherwise four — measured on 2 cores, 4 walkers beat 2 (≈9 against ≈12 ms for this
/// machine's 958 directories): part of the kernel's work sleeps on locks, and others fill in.
fn walk_threads() -> usize {
    match std::thread::available_parallelism().map_or(1, |n| n.get()) {
        1 => 1,
        _ => 4,
    }
}

fn log_sync(origin: Origin, s: &Summary, walk: &uevd_sysfs::WalkStats, elapsed: Duration) {
    info!(
        "{}: {} device(s) in sysfs walked in {:?}; queued {} add, {} change, {} remove; {} unchanged ({:?})",
        match origin {
            Origin::Resync => "resync",
            _ => "coldplug",
        },
        walk.devices,
        walk.elapsed,
        s.added,
        s.changed,
        s.removed,
        s.unchanged,
        elapsed
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walkers_yield_to_the_event_thread_and_their_threads_inherit_it() {
        fn nice(tid: rustix::process::Pid) -> i32 {
            rustix::process::getpriority_process(Some(tid)).unwrap()
        }
        let events = nice(rustix::thread::gettid());
        let (walker, helper) = std::thread::spawn(move || {
            yield_to_events();
            let helper = std::thread::spawn(|| nice(rustix::thread::gettid()))
                .join()
                .unwrap();
            (nice(rustix::thread::gettid()), helper)
        })
        .join()
        .unwrap();
        assert_eq!(walker, (events + WALK_NICENESS).min(19));
        assert_eq!(
            helper, walker,
            "threads the walker starts inherit its niceness"
        );
        assert_eq!(
            nice(rustix::thread::gettid()),
            events,
            "only the walker's thread is niced, not the whole daemon"
        );
    }
}
