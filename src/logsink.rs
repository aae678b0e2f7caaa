//! The log sink: formatted lines gather in memory and one background thread writes them
//! to stderr in batches, so a request neither waits on write(2) nor wakes a thread per line.
//!
//! A per-line queue (tracing-appender's) woke its writer thread for every request's line:
//! under load that thread took a quarter of the process's CPU in context switches. Here
//! only the first line of a batch wakes the thread, which then lets lines gather for
//! [`GATHER`] and writes them with one call. Nothing is ever dropped: a batch that reaches
//! [`MAX_PENDING`] bytes (stderr is slower than the lines come) is written by the thread
//! that filled it, which then waits on that write, and dropping the [`FlushGuard`] writes
//! what is left.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the writer thread lets lines gather after the first line of a batch. A line
/// reaches stderr this long after it is logged, plus the time of the write before it.
pub const GATHER: Duration = Duration::from_millis(10);
/// A batch this big is written by the thread that logged its last line, so memory stays
/// bounded however fast lines come.
pub const MAX_PENDING: usize = 1 << 20;

/// Lines not yet written.
struct Pending {
    lines: Vec<u8>,
    /// The guard was dropped: no writer thread any more; every line is written at once.
    closed: bool,
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
    /// Taken before `pending` whenever both are held: batches reach `out` in order.
    output: Mutex<Output<W>>,
}

/// Both locks guard plain buffers that stay valid after any panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<W: Write> Shared<W> {
    /// Writes every pending line. Holding `output` while taking the batch keeps batches in
    /// the order their lines were logged.
    fn flush(&self) {
        let mut output = lock(&self.output);
        let Output { out, spare } = &mut *output;
        spare.clear();
        std::mem::swap(&mut lock(&self.pending).lines, spare);
        if spare.is_empty() {
            return;
        }
        // A log that cannot be written (stderr closed) has nowhere to report it.
        let _ = out.write_all(spare).and_then(|()| out.flush());
        // A burst can leave a huge buffer behind: do not keep it.
        if spare.capacity() > MAX_PENDING * 2 {
            *spare = Vec::new();
        }
    }

    fn append(&self, line: &[u8]) {
        let mut pending = lock(&self.pending);
        let was_empty = pending.lines.is_empty();
        pending.lines.extend_from_slice(line);
        let write_now = pending.closed || pending.lines.len() >= MAX_PENDING;
        drop(pending);
        if write_now {
            self.flush();
        } else if was_empty {
            self.ready.notify_one();
        }
    }

    /// The writer thread: sleeps until a batch starts, lets it gather, writes it.
    fn run(&self) {
        loop {
            let mut pending = lock(&self.pending);
            while pending.lines.is_empty() && !pending.closed {
                pending = self
                    .ready
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            let closed = pending.closed;
            drop(pending);
            if !closed {
                std::thread::sleep(GATHER);
            }
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
}

impl<W: Write> Drop for FlushGuard<W> {
    fn drop(&mut self) {
        lock(&self.shared.pending).closed = true;
        self.shared.ready.notify_one();
        if let Some(thread) = self.thread.take() {
            // The thread only writes; should it have panicked, write what is left here.
            if thread.join().is_err() {
                self.shared.flush();
            }
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
        }),
        ready: Condvar::new(),
        output: Mutex::new(Output {
            out,
            spare: Vec::with_capacity(64 * 1024),
        }),
    });
    let thread = std::thread::Builder::new().name(name.to_owned()).spawn({
        let shared = Arc::clone(&shared);
        move || shared.run()
    })?;
    Ok((
        BatchWriter {
            shared: Arc::clone(&shared),
        },
        FlushGuard {
            shared,
            thread: Some(thread),
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
            lock(&self.0).push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Recorder {
        fn text(&self) -> String {
            String::from_utf8(lock(&self.0).concat()).unwrap()
        }
        fn writes(&self) -> usize {
            lock(&self.0).len()
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
        // Long lines, so that batches pass MAX_PENDING and writers write inline too.
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
