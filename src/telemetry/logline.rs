//! The log line: the `tracing` layer that formats each event, as text or JSON, into a
//! per-thread buffer and hands it to the batching sink ([`crate::telemetry::logsink`]).
//!
//! Its lines are those of tracing-subscriber's `fmt` layer (the `Full` text format, and the
//! JSON format with `flatten_event(true)`), which docs/operations.md documents and a test here
//! holds it to. It exists because a request's `message_handled` line went through `fmt`'s
//! general machinery (styled pieces painted even without colours, every string value
//! formatted through `Debug`, a calendar computed per line) for about 1.5 µs of the
//! request's CPU. Here a line writes its bytes straight out: string values are escaped
//! only when they need it, and the timestamp's date and time of day are worked out once
//! per second per thread.
//!
//! wxrules opens no spans, so lines carry no span context. Events of the `log` crate are
//! written under their own target, without the `log.*` fields the bridge adds (`fmt`'s
//! JSON format keeps those).

use std::cell::RefCell;
use std::fmt;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::{Context, Layer};

use crate::telemetry::limit::Callsites;
use crate::telemetry::logsink::BatchWriter;

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    /// `2026-11-27T08:28:57.500426Z  INFO target: name="value" n=1`
    Text {
        /// Colours, for a terminal.
        ansi: bool,
    },
    /// `{"timestamp":"…","level":"INFO","name":"value","n":1,"target":"…"}`
    Json,
}

/// The layer: formats every event it is given and appends the line to `out`.
pub struct Lines<W: Write> {
    format: LineFormat,
    out: BatchWriter<W>,
}

impl<W: Write> Lines<W> {
    pub fn new(format: LineFormat, out: BatchWriter<W>) -> Lines<W> {
        Lines { format, out }
    }
}

/// The limit on other crates' lines, by the module they come from.
static FOREIGN: Callsites = Callsites::new(crate::telemetry::limit::PER_SECOND);

/// The target of a line another crate logs (`None` for wxrules' own).
fn foreign_target(event: &Event<'_>) -> Option<String> {
    let target = event.metadata().target();
    if target.starts_with("wxrules") {
        return None;
    }
    // A `log` record comes through tracing-log under `log` itself; its own target (the
    // module) is in its fields, which `normalized_metadata` reads.
    match event.normalized_metadata() {
        Some(meta) if meta.target().starts_with("wxrules") => None,
        Some(meta) => Some(meta.target().to_owned()),
        None => Some(target.to_owned()),
    }
}

/// A line bigger than this is not kept as the thread's buffer after it is written.
const KEEP_BUFFER: usize = 16 * 1024;

impl<S, W> Layer<S> for Lines<W>
where
    S: Subscriber,
    W: Write + Send + 'static,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        // Another crate's lines (actix's about a malformed request, say) are bounded by
        // where they come from: a client can make them as fast as it can send.
        let foreign = foreign_target(event);
        let mut suppressed = 0;
        if let Some(target) = &foreign {
            use std::hash::BuildHasher;
            let site = foldhash::fast::FixedState::default().hash_one(target.as_str());
            match FOREIGN.admit(site as usize) {
                Some(left_out) => suppressed = left_out,
                None => {
                    crate::telemetry::limit::count_suppressed();
                    return;
                }
            }
        }
        with_buffer(|line| {
            write_line(self.format, SystemTime::now(), event, line);
            self.out.append(line);
        });
        if let (Some(target), true) = (foreign, suppressed > 0) {
            tracing::warn!(
                event = "log_lines_suppressed",
                from = target,
                lines = suppressed,
                "lines from this source were left out: more than 20 a second"
            );
        }
    }
}

/// Runs `f` on the thread's line buffer, emptied. An event logged while a line is being
/// formatted (a `Debug` impl that logs, under the global dispatcher, which does not guard
/// against re-entry), or after the thread's buffer is gone, gets a buffer of its own.
fn with_buffer(f: impl FnOnce(&mut Vec<u8>)) {
    thread_local! {
        static BUFFER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
    }
    let mut f = Some(f);
    let _ = BUFFER.try_with(|buffer| {
        let Ok(mut line) = buffer.try_borrow_mut() else {
            return;
        };
        line.clear();
        if let Some(f) = f.take() {
            f(&mut line);
        }
        if line.capacity() > KEEP_BUFFER {
            *line = Vec::with_capacity(512);
        }
    });
    if let Some(f) = f {
        f(&mut Vec::new());
    }
}

/// Writes `event`'s line, newline included, into `out`.
fn write_line(format: LineFormat, now: SystemTime, event: &Event<'_>, out: &mut Vec<u8>) {
    let normalized = event.normalized_metadata();
    let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
    match format {
        LineFormat::Text { ansi } => {
            let style = Style { ansi };
            style.dimmed(out, |out| write_timestamp(out, now));
            out.push(b' ');
            style.level(out, *meta.level());
            out.push(b' ');
            style.dimmed(out, |out| out.extend_from_slice(meta.target().as_bytes()));
            style.dimmed(out, |out| out.push(b':'));
            out.push(b' ');
            event.record(&mut TextFields {
                out,
                style,
                first: true,
            });
        }
        LineFormat::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            write_timestamp(out, now);
            out.extend_from_slice(b"\",\"level\":\"");
            out.extend_from_slice(level_name(*meta.level()).as_bytes());
            out.push(b'"');
            event.record(&mut JsonFields { out });
            out.extend_from_slice(b",\"target\":");
            json_string(out, meta.target());
            out.push(b'}');
        }
    }
    out.push(b'\n');
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARN",
        Level::ERROR => "ERROR",
    }
}

thread_local! {
    /// The second last formatted by this thread, and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
}

/// `2026-11-27T08:28:57.500426Z`: RFC 3339 in UTC, to the microsecond, as `fmt` writes it.
fn write_timestamp(out: &mut Vec<u8>, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let cached = SECOND.try_with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.0 != secs {
            *cell = (secs, date_and_time(secs));
        }
        cell.1
    });
    let prefix = cached.unwrap_or_else(|_| date_and_time(secs));
    out.extend_from_slice(&prefix);
    out.push(b'.');
    push_digits(out, since.subsec_micros(), 6);
    out.push(b'Z');
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time, in UTC.
fn date_and_time(secs: u64) -> [u8; 19] {
    let at = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut text = Vec::with_capacity(19);
    push_digits(&mut text, u32::try_from(at.year()).unwrap_or(0), 4);
    text.push(b'-');
    push_digits(&mut text, u32::from(u8::from(at.month())), 2);
    text.push(b'-');
    push_digits(&mut text, u32::from(at.day()), 2);
    text.push(b'T');
    push_digits(&mut text, u32::from(at.hour()), 2);
    text.push(b':');
    push_digits(&mut text, u32::from(at.minute()), 2);
    text.push(b':');
    push_digits(&mut text, u32::from(at.second()), 2);
    let mut fixed = [b'0'; 19];
    fixed.copy_from_slice(&text[..19]);
    fixed
}

/// `value`'s last `width` decimal digits, zero-padded.
fn push_digits(out: &mut Vec<u8>, mut value: u32, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// The colours of the text format on a terminal: those of `fmt`.
#[derive(Clone, Copy)]
struct Style {
    ansi: bool,
}

impl Style {
    fn paint(self, out: &mut Vec<u8>, style: nu_ansi_term::Style, body: impl FnOnce(&mut Vec<u8>)) {
        if self.ansi {
            push_fmt(out, format_args!("{}", style.prefix()));
            body(out);
            push_fmt(out, format_args!("{}", style.suffix()));
        } else {
            body(out);
        }
    }

    fn dimmed(self, out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
        self.paint(out, nu_ansi_term::Style::new().dimmed(), body);
    }

    /// The level, right-aligned in five columns.
    fn level(self, out: &mut Vec<u8>, level: Level) {
        use nu_ansi_term::Color;
        let color = match level {
            Level::TRACE => Color::Purple,
            Level::DEBUG => Color::Blue,
            Level::INFO => Color::Green,
            Level::WARN => Color::Yellow,
            Level::ERROR => Color::Red,
        };
        let name = level_name(level);
        self.paint(out, color.normal(), |out| {
            out.resize(out.len() + 5 - name.len(), b' ');
            out.extend_from_slice(name.as_bytes());
        });
    }
}

/// Fields the `log` bridge adds: already read into the line's target.
fn is_log_metadata(field: &Field) -> bool {
    field.name().starts_with("log.")
}

/// A field's name as written: `r#type` is `type`.
fn field_name(field: &Field) -> &str {
    let name = field.name();
    name.strip_prefix("r#").unwrap_or(name)
}

/// The text format's fields: the message bare, then `name=value` pairs, space-separated;
/// strings quoted and escaped as `Debug` does.
struct TextFields<'a> {
    out: &'a mut Vec<u8>,
    style: Style,
    first: bool,
}

impl TextFields<'_> {
    /// Starts a field: a space unless it is the first, then `name=` unless it is the message.
    fn start(&mut self, field: &Field) {
        if !std::mem::take(&mut self.first) {
            self.out.push(b' ');
        }
        if field.name() == "message" {
            return;
        }
        let name = field_name(field);
        self.style
            .paint(self.out, nu_ansi_term::Style::new().italic(), |out| {
                out.extend_from_slice(name.as_bytes());
            });
        self.style.dimmed(self.out, |out| out.push(b'='));
    }
}

impl Visit for TextFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if is_log_metadata(field) {
            return;
        }
        self.start(field);
        if field.name() == "message" {
            push_message(self.out, value);
        } else if value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            // What `Debug` writes for printable ASCII without quotes or backslashes.
            self.out.push(b'"');
            self.out.extend_from_slice(value.as_bytes());
            self.out.push(b'"');
        } else {
            push_fmt(self.out, format_args!("{value:?}"));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if is_log_metadata(field) {
            return;
        }
        self.start(field);
        push_number(self.out, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.start(field);
        push_number(self.out, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.start(field);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if is_log_metadata(field) {
            return;
        }
        self.start(field);
        push_escaped(self.out, format_args!("{value:?}"));
    }

    /// `name=error`, then `name.sources=[source, …]` if it has sources, as `fmt` writes it.
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.start(field);
        push_escaped(self.out, format_args!("{value}"));
        let Some(mut source) = value.source() else {
            return;
        };
        self.out.push(b' ');
        let italic = nu_ansi_term::Style::new().italic();
        let name = field.name();
        self.style.paint(self.out, italic, |out| {
            out.extend_from_slice(name.as_bytes())
        });
        self.style
            .paint(self.out, italic, |out| out.extend_from_slice(b".sources"));
        self.style.dimmed(self.out, |out| out.push(b'='));
        self.out.push(b'[');
        loop {
            push_escaped(self.out, format_args!("{source}"));
            match source.source() {
                Some(next) => {
                    self.out.extend_from_slice(b", ");
                    source = next;
                }
                None => break,
            }
        }
        self.out.push(b']');
    }
}

/// The JSON format's fields: `,"name":value` each, strings and `Debug` output as JSON
/// strings, numbers and booleans bare.
struct JsonFields<'a> {
    out: &'a mut Vec<u8>,
}

impl JsonFields<'_> {
    fn key(&mut self, field: &Field) {
        self.out.push(b',');
        // `fmt`'s flattened JSON writes the name as given (tracing's macros already drop `r#`).
        json_string(self.out, field.name());
        self.out.push(b':');
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if is_log_metadata(field) {
            return;
        }
        self.key(field);
        json_string(self.out, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if is_log_metadata(field) {
            return;
        }
        self.key(field);
        push_number(self.out, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        push_number(self.out, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        // serde_json writes a non-finite number as `null`, as `fmt` does.
        let _ = serde_json::to_writer(&mut *self.out, &value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if is_log_metadata(field) {
            return;
        }
        self.key(field);
        json_string(self.out, &text_of(format_args!("{value:?}")));
    }
}

/// `args` appended as text. A `Debug` or `Display` impl that fails leaves what it wrote:
/// a log line never panics (`io::Write::write_fmt` would).
fn push_fmt(out: &mut Vec<u8>, args: fmt::Arguments<'_>) {
    struct Bytes<'a>(&'a mut Vec<u8>);
    impl fmt::Write for Bytes<'_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0.extend_from_slice(s.as_bytes());
            Ok(())
        }
    }
    let _ = fmt::write(&mut Bytes(out), args);
}

/// `args` as a `String`; a failing impl leaves what it wrote.
fn text_of(args: fmt::Arguments<'_>) -> String {
    let mut text = String::new();
    let _ = fmt::Write::write_fmt(&mut text, args);
    text
}

/// A message, an error or a value written with `%`, with every control character spelled
/// out: the ones a terminal would act on (ESC, BEL, BS, FF, DEL, the C1 controls) as `fmt`
/// does, and also line breaks, tabs and the rest of C0, which `fmt` leaves raw. A value
/// that came from a request (a parse error quoting the body) can then neither drive the
/// terminal that shows the log nor start a forged line of its own.
fn push_message(out: &mut Vec<u8>, text: &str) {
    // C1 controls are U+0080..U+009F: 0xC2 then 0x80..=0x9F in UTF-8.
    let bytes = text.as_bytes();
    let clean = !bytes.iter().enumerate().any(|(i, &b)| {
        b < 0x20
            || b == 0x7f
            || (b == 0xc2 && bytes.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n)))
    });
    if clean {
        out.extend_from_slice(bytes);
        return;
    }
    for c in text.chars() {
        match c {
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\0'..='\x1f' | '\x7f' => push_fmt(out, format_args!("\\x{:02x}", u32::from(c))),
            '\u{80}'..='\u{9f}' => push_fmt(out, format_args!("\\u{{{:x}}}", u32::from(c))),
            c => {
                let mut utf8 = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
}

/// `args` appended with `push_message`'s escaping; no allocation when it has nothing to
/// escape.
fn push_escaped(out: &mut Vec<u8>, args: fmt::Arguments<'_>) {
    struct Escaping<'a>(&'a mut Vec<u8>);
    impl fmt::Write for Escaping<'_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            push_message(self.0, s);
            Ok(())
        }
    }
    let _ = fmt::write(&mut Escaping(out), args);
}

/// An integer in decimal, formatted by itoa rather than `fmt`.
fn push_number(out: &mut Vec<u8>, value: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// `value` as a JSON string, escaped by serde_json.
fn json_string(out: &mut Vec<u8>, value: &str) {
    let _ = serde_json::to_writer(out, value);
}

#[cfg(test)]
mod tests {
    use parking_lot::Mutex;
    use std::sync::Arc;
    use std::time::Duration;

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::telemetry::logsink::batched;

    /// Everything written, shared with the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().clone()).unwrap()
        }
    }

    use std::io;

    /// The events wxrules logs, and values that need escaping.
    fn emit() {
        tracing::info!(
            event = "message_handled",
            outcome = "replied",
            rule = "price",
            msg_type = "text",
            wx_event = "",
            msg_id = "1234567890123456",
            reply = "text",
            us = 41_u64
        );
        tracing::warn!(
            event = "deadline_exceeded",
            stage = "dedup",
            us = 3_000_001_u64,
            "an earlier attempt at this push did not answer in time; answering `success`"
        );
        let reason = "rules.yaml:3:7: unknown field `replly`";
        tracing::error!(event = "rules_reload_rejected", reason = %reason, errors = 2_u64);
        tracing::info!(
            quote = "say \"hi\"",
            backslash = r"C:\rules",
            newline = "a\nb\tc",
            control = "\u{1}\u{7f}",
            chinese = "你好，世界",
            empty = "",
            negative = -5_i64,
            flag = true,
            ratio = 0.25_f64,
            debug = ?vec!["a", "b"],
            r#type = "raw"
        );
        tracing::debug!(from_user = "oUser", "message_received");
        tracing::info!("a message with \"quotes\" and {} args", 2);
        // Terminal controls in a message are spelled out; in a quoted value `Debug` does it.
        tracing::warn!(
            value = "esc \u{1b}[31m",
            "esc \u{1b}[31m bel \u{7} del \u{7f} c1 \u{9b} ok é"
        );
        tracing::info!(message = "bs \u{8} ff \u{c}", n = 1_u64);
        let failure = Failure("outer \u{1b}", Some(Box::new(Failure("inner", None))));
        tracing::error!(
            error = &failure as &(dyn std::error::Error + 'static),
            alone = &Failure("no sources", None) as &(dyn std::error::Error + 'static),
            big = u128::MAX,
            small = i128::MIN,
            nan = f64::NAN,
            infinite = f64::INFINITY
        );
        let workers = 2;
        tracing_log::format_trace(
            &log::Record::builder()
                .args(format_args!("starting {workers} workers"))
                .level(log::Level::Info)
                .target("actix_server::builder")
                .module_path_static(Some("actix_server::builder"))
                .file_static(Some("builder.rs"))
                .line(Some(7))
                .build(),
        )
        .unwrap();
    }

    /// An error with an optional source.
    #[derive(Debug)]
    struct Failure(&'static str, Option<Box<Failure>>);

    impl fmt::Display for Failure {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Failure {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1
                .as_deref()
                .map(|e| e as &(dyn std::error::Error + 'static))
        }
    }

    /// The events `emit` logs; the last is the `log` crate's record.
    const EVENTS: usize = 10;

    /// Lines with their timestamps replaced.
    fn normalized(text: &str) -> Vec<String> {
        let stamp = regex::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z").unwrap();
        text.lines()
            .map(|line| stamp.replace(line, "<time>").into_owned())
            .collect()
    }

    /// Ours must equal `fmt`'s lines, but for the `log` record's: `fmt` leaves a space
    /// there for each `log.*` field it skips.
    fn assert_text_equal(ours: &[String], fmts: &[String]) {
        assert_eq!(ours.len(), EVENTS);
        assert_eq!(ours[..EVENTS - 1], fmts[..EVENTS - 1]);
        assert_eq!(ours[EVENTS - 1], fmts[EVENTS - 1].trim_end());
    }

    fn ours(format: LineFormat) -> Vec<String> {
        let out = Captured::default();
        let (writer, guard) = batched(out.clone(), "test-log").unwrap();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::TRACE)
            .with(Lines::new(format, writer));
        tracing::subscriber::with_default(subscriber, emit);
        drop(guard);
        normalized(&out.text())
    }

    fn fmts(json: bool, ansi: bool) -> Vec<String> {
        let out = Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_ansi(ansi)
            .with_writer({
                let out = out.clone();
                move || out.clone()
            });
        if json {
            tracing::subscriber::with_default(builder.json().flatten_event(true).finish(), emit);
        } else {
            tracing::subscriber::with_default(builder.finish(), emit);
        }
        normalized(&out.text())
    }

    #[test]
    fn text_lines_are_those_of_fmt() {
        let ours = ours(LineFormat::Text { ansi: false });
        assert_text_equal(&ours, &fmts(false, false));
        assert_eq!(
            ours[0],
            r#"<time>  INFO wxrules::telemetry::logline::tests: event="message_handled" outcome="replied" rule="price" msg_type="text" wx_event="" msg_id="1234567890123456" reply="text" us=41"#
        );
        assert_eq!(
            ours[6],
            r#"<time>  WARN wxrules::telemetry::logline::tests: esc \x1b[31m bel \x07 del \x7f c1 \u{9b} ok é value="esc \u{1b}[31m""#
        );
        assert_eq!(
            ours[8],
            "<time> ERROR wxrules::telemetry::logline::tests: error=outer \\x1b error.sources=[inner] \
             alone=no sources big=340282366920938463463374607431768211455 \
             small=-170141183460469231731687303715884105728 nan=NaN infinite=inf"
        );
        assert_eq!(
            ours[9],
            "<time>  INFO actix_server::builder: starting 2 workers"
        );
    }

    /// `fmt` writes a `%` value's line breaks raw: a parse error quoting a request body
    /// (`…</xml\n<forged>…`) started a forged line. Ours spells every control out.
    #[test]
    fn text_values_and_messages_cannot_break_the_line() {
        let out = Captured::default();
        let (writer, guard) = batched(out.clone(), "test-log").unwrap();
        let subscriber = tracing_subscriber::registry()
            .with(Lines::new(LineFormat::Text { ansi: false }, writer));
        tracing::subscriber::with_default(subscriber, || {
            let reason =
                "mismatched `xml\n2026-11-30T00:00:00.000000Z  INFO forged: \u{1b}[2J\r\t\u{0}`";
            tracing::warn!(event = "request_refused", reason = %reason, "refused\n{}", "forged");
        });
        drop(guard);
        let text = out.text();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.ends_with(
                "refused\\nforged event=\"request_refused\" reason=mismatched `xml\\n2026-11-30T00:00:00.000000Z  INFO forged: \\x1b[2J\\r\\t\\x00`\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn coloured_text_lines_are_those_of_fmt() {
        assert_text_equal(&ours(LineFormat::Text { ansi: true }), &fmts(false, true));
    }

    #[test]
    fn json_lines_are_those_of_fmt() {
        let ours = ours(LineFormat::Json);
        let fmts = fmts(true, false);
        // The last is the `log` record, whose `log.*` fields `fmt` keeps in JSON.
        assert_eq!(ours.len(), EVENTS);
        assert_eq!(ours[..EVENTS - 1], fmts[..EVENTS - 1]);
        assert_eq!(
            ours[EVENTS - 1],
            r#"{"timestamp":"<time>","level":"INFO","message":"starting 2 workers","target":"actix_server::builder"}"#
        );
        for line in &ours {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        assert_eq!(
            ours[2],
            r#"{"timestamp":"<time>","level":"ERROR","event":"rules_reload_rejected","reason":"rules.yaml:3:7: unknown field `replly`","errors":2,"target":"wxrules::telemetry::logline::tests"}"#
        );
    }

    fn stamp(secs: u64, micros: u32) -> String {
        let at = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros.into());
        let mut out = Vec::new();
        write_timestamp(&mut out, at);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn timestamps_are_rfc3339_utc_to_the_microsecond() {
        assert_eq!(stamp(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(stamp(1_795_737_600, 500_426), "2026-11-27T00:00:00.500426Z");
        // The same second again comes from the thread's cache.
        assert_eq!(stamp(1_795_737_600, 7), "2026-11-27T00:00:00.000007Z");
        assert_eq!(stamp(951_782_400, 999_999), "2000-02-29T00:00:00.999999Z");
        assert_eq!(stamp(4_102_444_799, 1), "2099-12-31T23:59:59.000001Z");
    }

    #[test]
    fn a_line_formatted_inside_another_gets_its_own_buffer() {
        let mut lines = Vec::new();
        with_buffer(|outer| {
            outer.extend_from_slice(b"outer ");
            with_buffer(|inner| {
                assert!(inner.is_empty());
                inner.extend_from_slice(b"inner");
                lines.push(inner.clone());
            });
            outer.extend_from_slice(b"line");
            lines.push(outer.clone());
        });
        // The thread's buffer comes back empty.
        with_buffer(|again| lines.push(again.clone()));
        assert_eq!(lines, [&b"inner"[..], b"outer line", b""]);
    }

    #[test]
    fn a_value_that_logs_while_it_is_formatted_leaves_its_line_whole() {
        struct Nested;
        impl fmt::Debug for Nested {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // tracing drops an event logged inside another's dispatch.
                tracing::info!(event = "inner");
                f.write_str("outer value")
            }
        }
        let out = Captured::default();
        let (writer, guard) = batched(out.clone(), "test-log").unwrap();
        let subscriber = tracing_subscriber::registry().with(Lines::new(LineFormat::Json, writer));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(event = "outer", value = ?Nested);
            tracing::info!(event = "after");
        });
        drop(guard);
        let lines = normalized(&out.text());
        assert_eq!(
            lines,
            [
                r#"{"timestamp":"<time>","level":"INFO","event":"outer","value":"outer value","target":"wxrules::telemetry::logline::tests"}"#,
                r#"{"timestamp":"<time>","level":"INFO","event":"after","target":"wxrules::telemetry::logline::tests"}"#
            ]
        );
    }
}
