//! The log sink: formatted lines gather in memory and one background thread writes them
//! to stderr in batches, so a request neither waits on write(2) nor wakes a thread per line.
//!
//! A per-line queue (tracing-appender's) woke its writer thread for every request's line:
//! under load that thread took a quarter of the process's CPU in context switches. Here
//! only the first line of a batch wakes the thread, which then lets lines gather for
//! [`GATHER`] and writes them with one call; only that thread ever writes. A batch that
//! reaches [`MAX_PENDING`] bytes (lines come faster than they are written) wakes it at
//! once, and a thread with another line waits for it to take the batch.
//!
//! A log that cannot be written must not stop the server: when stderr stalls (journald
//! paused, a pipe nobody reads) the writer thread is stuck in its write, the batch fills,
//! and a thread with a line waits [`STALL`] at most, once; from then until the stuck write
//! ends, lines are dropped and counted ([`dropped`], the metric
//! `wxrules_log_lines_dropped_total`), never waited for. Dropping the [`FlushGuard`]
//! writes what is left.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the writer thread lets lines gather after the first line of a batch. A line
/// reaches stderr this long after it is logged, plus the time of the write before it.
pub const GATHER: Duration = Duration::from_millis(10);
/// A batch this big makes a thread with another line wait for the writer thread, so memory stays
/// bounded however fast lines come.
pub const MAX_PENDING: usize = 1 << 20;

/// How long a thread with a line waits for a stuck write to make room, before the sink
/// counts as stalled and drops lines instead.
pub const STALL: Duration = Duration::from_millis(250);

/// Lines dropped because the output stalled, since the start (all sinks of the process).
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many log lines were dropped because the log output stalled.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Lines not yet written.
struct Pending {
    lines: Vec<u8>,
    /// The guard was dropped: no writer thread any more; every line is written at once.
    closed: bool,
    /// A write was stuck past `STALL`: lines for a full batch are dropped at once until a
    /// batch is taken again.
    stalled: bool,
    /// A thread waits for room: the writer thread takes the batch without gathering.
    want_room: bool,
}

/// The output and a spare buffer, swapped with the pending one so that neither side
/// reallocates in the steady state.
struct Output<W> {
    out: W,
    spare: Vec<u8>,
}

struct Shared<W> {
    pending: Mutex<Pending>,
    /// Signalled when a line lands in an empty batch, or at close.
    ready: Condvar,
    /// Signalled when a batch is taken for writing, which leaves room for lines.
    taken: Condvar,
    /// Taken before `pending` whenever both are held: batches reach `out` in order.
    output: Mutex<Output<W>>,
}

impl<W: Write> Shared<W> {
    /// Writes every pending line. Holding `output` while taking the batch keeps batches in
    /// the order their lines were logged.
    fn flush(&self) {
        let mut output = self.output.lock();
        let Output { out, spare } = &mut *output;
        spare.clear();
        {
            let mut pending = self.pending.lock();
            std::mem::swap(&mut pending.lines, spare);
            pending.want_room = false;
        }
        self.taken.notify_all();
        if spare.is_empty() {
            return;
        }
        // A log that cannot be written (stderr closed) has nowhere to report it.
        let _ = out.write_all(spare).and_then(|()| out.flush());
        // Only a write that ends says the output moves again: loggers pay `STALL` once
        // per stall, not once per batch of a slow output.
        self.pending.lock().stalled = false;
        // A burst can leave a huge buffer behind: do not keep it.
        if spare.capacity() > MAX_PENDING * 2 {
            *spare = Vec::new();
        }
    }

    fn append(&self, line: &[u8]) {
        let mut pending = self.pending.lock();
        let fits = |p: &Pending| p.lines.len() + line.len() <= MAX_PENDING || p.lines.is_empty();
        if !pending.closed && !fits(&pending) {
            if pending.stalled {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // Only the writer thread writes; it is woken now, past its gathering pause, and
            // this thread waits for it to take the batch, `STALL` at most.
            pending.want_room = true;
            self.ready.notify_one();
            self.taken
                .wait_while_for(&mut pending, |p| !fits(p) && !p.stalled && !p.closed, STALL);
            if !pending.closed && !fits(&pending) {
                pending.stalled = true;
                DROPPED.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let was_empty = pending.lines.is_empty();
        pending.lines.extend_from_slice(line);
        let closed = pending.closed;
        drop(pending);
        if closed {
            self.flush();
        } else if was_empty {
            self.ready.notify_one();
        }
    }

    /// The writer thread: sleeps until a batch starts, lets it gather (less if a thread
    /// waits for room), writes it.
    fn run(&self) {
        loop {
            let mut pending = self.pending.lock();
            while pending.lines.is_empty() && !pending.closed {
                self.ready.wait(&mut pending);
            }
            if !pending.closed {
                self.ready
                    .wait_while_for(&mut pending, |p| !p.want_room && !p.closed, GATHER);
            }
            let closed = pending.closed;
            drop(pending);
            self.flush();
            if closed {
                return;
            }
        }
    }
}

/// The writing end: each call appends one formatted line to the pending batch.
pub struct BatchWriter<W> {
    shared: Arc<Shared<W>>,
}

impl<W: Write> BatchWriter<W> {
    /// Appends `line` (which ends with its newline) to the pending batch.
    pub fn append(&self, line: &[u8]) {
        self.shared.append(line);
    }
}

/// Keeps the writer thread; dropping it writes every pending line and stops the thread.
/// Lines logged after that are written at once.
#[must_use = "dropping the guard stops the writer thread"]
pub struct FlushGuard<W: Write> {
    shared: Arc<Shared<W>>,
    thread: Option<JoinHandle<()>>,
    /// Disconnected when the writer thread ends.
    ended: Option<std::sync::mpsc::Receiver<()>>,
}

/// How long the exit waits for the writer thread to write what is left. A stalled stderr
/// must not keep the process from exiting.
const EXIT_WAIT: Duration = Duration::from_secs(2);

impl<W: Write> Drop for FlushGuard<W> {
    fn drop(&mut self) {
        self.shared.pending.lock().closed = true;
        self.shared.ready.notify_one();
        let Some(thread) = self.thread.take() else {
            return;
        };
        // `ended` hangs up when the thread returns (or panics); past `EXIT_WAIT` it is
        // stuck in a write and is left behind.
        if let Some(ended) = self.ended.take() {
            if ended.recv_timeout(EXIT_WAIT) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
                return;
            }
        }
        // The thread only writes; should it have panicked, write what is left here.
        if thread.join().is_err() {
            self.shared.flush();
        }
    }
}

/// A batching writer over `out`, and the guard of its writer thread (named `name`).
pub fn batched<W: Write + Send + 'static>(
    out: W,
    name: &str,
) -> io::Result<(BatchWriter<W>, FlushGuard<W>)> {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending {
            lines: Vec::with_capacity(64 * 1024),
            closed: false,
            stalled: false,
            want_room: false,
        }),
        ready: Condvar::new(),
        taken: Condvar::new(),
        output: Mutex::new(Output {
            out,
            spare: Vec::with_capacity(64 * 1024),
        }),
    });
    let (alive, ended) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new().name(name.to_owned()).spawn({
        let shared = Arc::clone(&shared);
        move || {
            let _alive = alive;
            shared.run();
        }
    })?;
    Ok((
        BatchWriter {
            shared: Arc::clone(&shared),
        },
        FlushGuard {
            shared,
            thread: Some(thread),
            ended: Some(ended),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that records each write(2)-like call.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Recorder {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().concat()).unwrap()
        }
        fn writes(&self) -> usize {
            self.0.lock().len()
        }
    }

    fn log(writer: &BatchWriter<Recorder>, line: &str) {
        writer.append(line.as_bytes());
    }

    #[test]
    fn lines_arrive_in_order_in_few_writes_and_nothing_is_left_at_drop() {
        let out = Recorder::default();
        let (writer, guard) = batched(out.clone(), "test-log").unwrap();
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        for i in 0..1000 {
            log(&writer, &format!("line {i}\n"));
        }
        drop(guard);
        assert_eq!(out.text(), expected);
        // One burst, gathered: far fewer writes than lines.
        assert!(out.writes() < 10, "{} writes for 1000 lines", out.writes());
        // After the guard is gone, a line is written at once.
        log(&writer, "late\n");
        assert!(out.text().ends_with("line 999\nlate\n"));
    }

    #[test]
    fn a_line_reaches_the_output_without_further_logging() {
        let out = Recorder::default();
        let (writer, _guard) = batched(out.clone(), "test-log").unwrap();
        log(&writer, "alone\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while out.text().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the line was never written"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(out.text(), "alone\n");
    }

    #[test]
    fn concurrent_writers_lose_nothing_and_keep_their_own_order() {
        let out = Recorder::default();
        let (writer, guard) = batched(out.clone(), "test-log").unwrap();
        let writer = Arc::new(writer);
        // Long lines, so that batches pass MAX_PENDING and writers wait for room too.
        let pad = "x".repeat(4000);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = Arc::clone(&writer);
                let pad = pad.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        log(&writer, &format!("{t} {i} {pad}\n"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = out.text();
        let mut next = [0; 4];
        for line in text.lines() {
            let mut parts = line.split(' ');
            let t: usize = parts.next().unwrap().parse().unwrap();
            let i: usize = parts.next().unwrap().parse().unwrap();
            assert_eq!(i, next[t], "thread {t}'s lines out of order");
            next[t] += 1;
        }
        assert_eq!(next, [1000; 4]);
    }
}

#[cfg(test)]
mod stall_tests {
    use super::*;

    /// An output whose writes block until it is let go, as a paused journald's pipe does.
    #[derive(Clone)]
    struct Stuck {
        open: Arc<(Mutex<bool>, Condvar)>,
        written: Arc<Mutex<usize>>,
    }

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (open, opened) = &*self.open;
            let mut open = open.lock();
            while !*open {
                opened.wait(&mut open);
            }
            *self.written.lock() += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The probe: with stderr stalled, a flood of refused requests' lines stalled valid
    /// pushes behind the log. Now loggers wait `STALL` once, then drop and count.
    #[test]
    fn a_stalled_output_drops_lines_instead_of_blocking_the_loggers() {
        let out = Stuck {
            open: Arc::new((Mutex::new(false), Condvar::new())),
            written: Arc::new(Mutex::new(0)),
        };
        let (writer, guard) = batched(out.clone(), "test-log").unwrap();
        let line = format!("{}\n", "x".repeat(1000));
        let before = dropped();
        // 20 MiB of lines against a 1 MiB batch and an output that takes nothing. Before,
        // the thread that filled a batch wrote it itself, and this loop never ended.
        for _ in 0..20_000 {
            writer.append(line.as_bytes());
        }
        let lost = dropped() - before;
        assert!(lost > 15_000, "{lost} dropped");
        // Let the output go: what was kept is written, later lines are kept again.
        {
            let (open, opened) = &*out.open;
            *open.lock() = true;
            opened.notify_all();
        }
        drop(guard);
        let written = *out.written.lock();
        assert!(
            (MAX_PENDING..3 * MAX_PENDING).contains(&written),
            "{written}"
        );
    }
}
