//! The real `wxrules` binary under real signals: SIGHUP reloads (inline replies, templates,
//! broken files, both ways editors save, bursts of signals), SIGTERM with requests in flight,
//! and a load test that reloads 24 times under continuous traffic. Each test runs its own
//! server on `127.0.0.1:0` with its own files; every wait is bounded by `WAIT`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{sign, Scratch, TOKEN};
use serde_json::Value;

/// The longest any wait on the server may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

const BASE_RULES: &str = r#"rules:
  - name: hello
    when: { keyword: hi }
    reply: { text: "hello v1" }
  - name: greet
    when: { keyword: greet }
    reply: { text: { template: greet } }
  - name: fallback
    reply: { text: "fallback" }
"#;

const GREET_V1: &str = "greet v1 to {{FromUserName}}\n";

/// A scratch directory holding `BASE_RULES` and `templates/greet.hbs`.
fn base(tag: &str) -> Scratch {
    let scratch = Scratch::new(tag);
    scratch
        .write("rules.yaml", BASE_RULES)
        .write("templates/greet.hbs", GREET_V1);
    scratch
}

// ---------------------------------------------------------------------------------------
// Saving files the way editors do.

#[derive(Debug, Clone, Copy)]
enum Save {
    /// Write a temporary file next to the target, then rename it over the target (vim's
    /// default on most systems, most IDEs, `sed -i`, config management).
    Rename,
    /// Truncate the target and write into it (nano, `cat >`, vim with `backupcopy=yes`).
    InPlace,
}

fn save(path: &Path, text: &str, style: Save) {
    match style {
        Save::Rename => {
            let name = path.file_name().unwrap().to_string_lossy();
            let tmp = path.with_file_name(format!(".{name}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
        Save::InPlace => {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)
                .unwrap();
            file.write_all(text.as_bytes()).unwrap();
        }
    }
}

/// The digest the server will report for the files as they are now.
fn digest_of(scratch: &Scratch) -> String {
    let loaded = wxrules::rules::load(&scratch.sources()).unwrap();
    loaded.rules.digest().to_owned()
}

// ---------------------------------------------------------------------------------------
// The server's log: JSON lines read from its stderr on a thread.

/// The server's log events, parsed. `message_handled` lines are only counted, because the
/// load test writes tens of thousands of them.
#[derive(Default)]
struct Log {
    events: Mutex<Vec<Value>>,
    changed: Condvar,
    closed: AtomicBool,
    handled: AtomicU64,
}

impl Log {
    fn read_from(self: &Arc<Log>, stderr: impl Read + Send + 'static) {
        let log = Arc::clone(self);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains(r#""event":"message_handled""#) {
                    log.handled.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "raw": line }));
                log.lock().push(event);
                log.changed.notify_all();
            }
            log.closed.store(true, Ordering::SeqCst);
            // Take the lock so that no waiter misses the wake-up.
            drop(log.lock());
            log.changed.notify_all();
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Value>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `check` returns something for the events so far, for at most `WAIT`.
    fn wait_until<T>(&self, what: &str, mut check: impl FnMut(&[Value]) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        let mut events = self.lock();
        loop {
            if let Some(found) = check(&events) {
                return found;
            }
            if self.closed.load(Ordering::SeqCst) {
                panic!(
                    "the server exited while waiting for {what}; log:\n{}",
                    dump(&events)
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "waited {WAIT:?} for {what} in vain; log:\n{}",
                    dump(&events)
                );
            }
            events = self
                .changed
                .wait_timeout(events, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

fn event_name(e: &Value) -> &str {
    e["event"].as_str().unwrap_or("")
}

/// The one line that ends each reload: `rules_reloaded`, or the `rules_reload_rejected`
/// summary (the one with an `errors` count).
fn is_outcome(e: &Value) -> bool {
    match event_name(e) {
        "rules_reloaded" => true,
        "rules_reload_rejected" => e.get("errors").is_some(),
        "rules_reload_timed_out" => true,
        _ => false,
    }
}

fn dump(events: &[Value]) -> String {
    let skip = events.len().saturating_sub(60);
    events[skip..].iter().map(|e| format!("  {e}\n")).collect()
}

/// What one reload did, from the log.
#[derive(Debug)]
struct Reload {
    /// `rules_reloaded` or `rules_reload_rejected`.
    event: String,
    /// The whole outcome line.
    line: Value,
    /// The `error` of each `rules_reload_rejected` line before the summary.
    errors: Vec<String>,
}

impl Reload {
    fn assert_applied(&self) -> &Reload {
        assert_eq!(self.event, "rules_reloaded", "{self:?}");
        self
    }

    fn assert_rejected(&self) -> &Reload {
        assert_eq!(self.event, "rules_reload_rejected", "{self:?}");
        assert!(!self.errors.is_empty(), "{self:?}");
        assert_eq!(
            self.line["errors"].as_u64(),
            Some(self.errors.len() as u64),
            "{self:?}"
        );
        self
    }

    /// A `Debug`-formatted list field of `rules_reloaded` (`added`, `removed`, `changed`).
    fn names(&self, field: &str) -> Vec<String> {
        let text = self.line[field]
            .as_str()
            .unwrap_or_else(|| panic!("{self:?}"));
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{field} = {text:?}: {e}"))
    }
}

/// Asserts `error` reads `PATH:LINE:COL: rule `RULE`: …`.
fn assert_located(error: &str, path: &Path, line: usize, column: usize, rule: Option<&str>) {
    let at = format!("{}:{line}:{column}: ", path.display());
    assert!(error.starts_with(&at), "`{error}` should start with `{at}`");
    if let Some(rule) = rule {
        let named = format!("{at}rule `{rule}`: ");
        assert!(error.starts_with(&named), "`{error}` should name `{rule}`");
    }
}

// ---------------------------------------------------------------------------------------
// The server process.

/// The real binary, serving a scratch directory. Killed on drop if it still runs; when a
/// test fails, its log is printed.
/// `/healthz` after a rejected reload: the errors it shows are the logged ones, and the
/// digest is still that of the rules being served.
/// `/healthz` (which answers without a token) counts a rejected reload's errors and quotes
/// none of them: an error quotes the file it is about (Hardening 2). The log has them.
fn assert_health_shows_rejected(health: &Value, reload: &Reload, old_digest: &Value) {
    assert_eq!(health["last_reload"]["outcome"], "rejected", "{health}");
    assert_eq!(
        health["last_reload"]["error_count"],
        serde_json::json!(reload.errors.len()),
        "{health}"
    );
    assert_eq!(
        health["last_reload"]["errors"],
        serde_json::json!([]),
        "{health}"
    );
    let shown = health.to_string();
    for error in &reload.errors {
        assert!(!shown.contains(error.as_str()), "{error} in {health}");
    }
    assert_eq!(&health["digest"], old_digest, "{health}");
}

struct Server {
    child: Child,
    addr: SocketAddr,
    /// The admin port, with `--admin-listen`.
    admin: Option<SocketAddr>,
    log: Arc<Log>,
}

impl Server {
    fn start(scratch: &Scratch) -> Server {
        Server::launch(scratch, &[], |_, _| {})
    }

    /// `start`, calling `early` with the process and its log once it runs and before it
    /// has logged `server_started`.
    fn start_with(scratch: &Scratch, early: impl FnOnce(&Child, &Arc<Log>)) -> Server {
        Server::launch(scratch, &[], early)
    }

    /// `start_with`, with more command-line arguments.
    fn launch(scratch: &Scratch, args: &[&str], early: impl FnOnce(&Child, &Arc<Log>)) -> Server {
        Server::launch_env(scratch, args, &[], early)
    }

    /// `launch`, with more environment variables.
    fn launch_env(
        scratch: &Scratch,
        args: &[&str],
        env: &[(&str, &str)],
        early: impl FnOnce(&Child, &Arc<Log>),
    ) -> Server {
        let sources = scratch.sources();
        // The scratch files, unless `args` names its own (relative to the scratch directory,
        // the server's working directory).
        let files: Vec<std::ffi::OsString> = if args.contains(&"--rules") {
            Vec::new()
        } else {
            vec![
                "--rules".into(),
                sources.rules.clone().into(),
                "--templates".into(),
                sources.templates.clone().into(),
            ]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_wxrules"))
            .arg("serve")
            .args(files)
            .current_dir(&scratch.dir)
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(["--max-age", "0", "--workers", "2"])
            .args(args)
            .env("WXRULES_TOKEN", TOKEN)
            .env("WXRULES_LOG", "info")
            .env_remove("WXRULES_AES_KEY")
            .env_remove("WXRULES_APPID")
            .env_remove("WXRULES_ADMIN_TOKEN")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wxrules");
        let log = Arc::new(Log::default());
        log.read_from(child.stderr.take().unwrap());
        early(&child, &log);
        let pid = child.id();
        let started = log.wait_until("server_started", |events| {
            events
                .iter()
                .find(|e| event_name(e) == "server_started")
                .cloned()
        });
        assert_eq!(started["pid"].as_u64(), Some(u64::from(pid)), "{started}");
        let addr: SocketAddr = started["listen"].as_str().unwrap().parse().unwrap();
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{started}");
        let admin = started["admin_listen"]
            .as_str()
            .filter(|a| !a.is_empty())
            .map(|a| a.parse().unwrap());
        Server {
            child,
            addr,
            admin,
            log,
        }
    }

    /// Sends a real signal with kill(1).
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    fn outcomes(&self) -> usize {
        self.log.lock().iter().filter(|e| is_outcome(e)).count()
    }

    /// Sends SIGHUP and waits for the reload it causes.
    fn reload(&self) -> Reload {
        let before = self.outcomes();
        self.signal("HUP");
        self.reload_after(before)
    }

    /// Waits for the reload that ends after the first `before` ones.
    fn reload_after(&self, before: usize) -> Reload {
        self.log.wait_until("the outcome of a reload", |events| {
            let (at, line) = events
                .iter()
                .enumerate()
                .filter(|(_, e)| is_outcome(e))
                .nth(before)?;
            let start = events[..at]
                .iter()
                .rposition(is_outcome)
                .map_or(0, |i| i + 1);
            let errors = events[start..at]
                .iter()
                .filter(|e| event_name(e) == "rules_reload_rejected")
                .filter_map(|e| e["error"].as_str().map(str::to_owned))
                .collect();
            Some(Reload {
                event: event_name(line).to_owned(),
                line: line.clone(),
                errors,
            })
        })
    }

    /// Waits until a reload has applied exactly these files.
    fn wait_for_digest(&self, digest: &str) {
        self.log
            .wait_until(&format!("rules_reloaded with digest {digest}"), |events| {
                events
                    .iter()
                    .any(|e| event_name(e) == "rules_reloaded" && e["digest"] == digest)
                    .then_some(())
            });
    }

    fn count(&self, event: &str) -> usize {
        self.log
            .lock()
            .iter()
            .filter(|e| event_name(e) == event)
            .count()
    }

    /// Posts a signed text message on a new connection; returns the status and body.
    fn post(&self, content: &str) -> (u16, String) {
        let mut client = Client::connect(self.addr);
        client
            .send(
                "POST",
                &signed_target(),
                text_message(content).as_bytes(),
                true,
            )
            .unwrap()
    }

    /// The text reply to `content`, which must be a 200.
    fn reply(&self, content: &str) -> String {
        let (status, body) = self.post(content);
        assert_eq!(status, 200, "{body}");
        content_of(&body)
            .unwrap_or_else(|| panic!("not a text reply: {body}"))
            .to_owned()
    }

    fn health(&self) -> Value {
        let (status, body) = Client::connect(self.addr)
            .send("GET", "/healthz", b"", true)
            .unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the server exited; log:\n{}",
            dump(&self.log.lock())
        );
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- server log ---\n{}", dump(&self.log.lock()));
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// A small HTTP/1.1 client over std::net, loopback only.

struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        assert!(addr.ip().is_loopback());
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    fn write_head(&mut self, method: &str, target: &str, length: usize, close: bool) {
        let connection = if close { "close" } else { "keep-alive" };
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\n\
             Content-Length: {length}\r\nConnection: {connection}\r\n\r\n"
        );
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes()).unwrap();
        stream.flush().unwrap();
    }

    /// Sends one request and reads its response. With `close`, the server closes the
    /// connection after answering; otherwise the connection can carry the next request.
    fn send(
        &mut self,
        method: &str,
        target: &str,
        body: &[u8],
        close: bool,
    ) -> io::Result<(u16, String)> {
        self.send_with(method, target, "", body, close)
    }

    /// `send`, with more header lines (each ending in `\r\n`).
    fn send_with(
        &mut self,
        method: &str,
        target: &str,
        headers: &str,
        body: &[u8],
        close: bool,
    ) -> io::Result<(u16, String)> {
        let connection = if close { "close" } else { "keep-alive" };
        let mut request = format!(
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\n\
             Content-Length: {}\r\nConnection: {connection}\r\n{headers}\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        self.reader.get_mut().write_all(&request)?;
        self.read_response()
    }

    fn read_response(&mut self) -> io::Result<(u16, String)> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
        let mut length = None;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(bad("connection closed in the headers".into()));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                return Err(bad(format!("bad header {header:?}")));
            };
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(bad(format!("unsupported {header:?}")));
            }
        }
        let length = length.ok_or_else(|| bad("no content-length".into()))?;
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// A fresh nonce for each request, and a MsgId that is never repeated, so that no dedup
/// of WeChat's retries can answer from an older rules version.
static SEQUENCE: AtomicU64 = AtomicU64::new(1);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn signed_target() -> String {
    let ts = now().to_string();
    let nonce = SEQUENCE.fetch_add(1, Ordering::Relaxed).to_string();
    format!(
        "/wechat?timestamp={ts}&nonce={nonce}&signature={}&openid=oUser",
        sign(&[TOKEN, &ts, &nonce])
    )
}

fn text_message(content: &str) -> String {
    let msg_id = u64::from(std::process::id()) << 32 | SEQUENCE.fetch_add(1, Ordering::Relaxed);
    format!(
        "<xml><ToUserName><![CDATA[gh_test]]></ToUserName>\
         <FromUserName><![CDATA[oUser]]></FromUserName><CreateTime>{}</CreateTime>\
         <MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content>\
         <MsgId>{msg_id}</MsgId></xml>",
        now()
    )
}

/// The `Content` of a text reply.
fn content_of(body: &str) -> Option<&str> {
    let start = body.find("<Content><![CDATA[")? + "<Content><![CDATA[".len();
    let end = start + body[start..].find("]]></Content>")?;
    Some(&body[start..end])
}

// ---------------------------------------------------------------------------------------
// The tests.

#[test]
fn changed_inline_reply_is_served_after_sighup() {
    let scratch = base("inline");
    let mut server = Server::start(&scratch);
    assert_eq!(server.reply("hi"), "hello v1");

    save(
        &scratch.path("rules.yaml"),
        &BASE_RULES.replace("hello v1", "hello v2"),
        Save::Rename,
    );
    let reload = server.reload();
    reload.assert_applied();
    assert_eq!(reload.names("changed"), ["hello"]);
    assert_eq!(server.reply("hi"), "hello v2");
    assert_eq!(server.reply("greet"), "greet v1 to oUser");

    let health = server.health();
    assert_eq!(health["last_reload"]["outcome"], "applied", "{health}");
    assert_eq!(health["digest"], reload.line["digest"], "{health}");
    assert_eq!(
        health["digest"].as_str(),
        Some(digest_of(&scratch).as_str())
    );
    assert_eq!(health["reloads_applied"], 1, "{health}");
    server.assert_alive();
}

#[test]
fn changed_template_is_served_after_sighup() {
    let scratch = base("template");
    let mut server = Server::start(&scratch);
    assert_eq!(server.reply("greet"), "greet v1 to oUser");

    save(
        &scratch.path("templates/greet.hbs"),
        "greet v2, {{FromUserName}}!\n",
        Save::Rename,
    );
    let reload = server.reload();
    reload.assert_applied();
    assert_eq!(reload.line["templates_changed"], true, "{:?}", reload);
    assert!(reload.names("changed").is_empty(), "{reload:?}");
    assert_eq!(server.reply("greet"), "greet v2, oUser!");
    assert_eq!(server.reply("hi"), "hello v1");
    server.assert_alive();
}

#[test]
fn broken_rules_file_keeps_the_old_rules_until_fixed() {
    let scratch = base("broken");
    let rules = scratch.path("rules.yaml");
    let mut server = Server::start(&scratch);
    let old_digest = server.health()["digest"].clone();

    // A YAML syntax error: a stray `}` on line 4, column 32.
    let bad_yaml = BASE_RULES.replace(
        r#"reply: { text: "hello v1" }"#,
        r#"reply: { text: "hello v2" }}"#,
    );
    save(&rules, &bad_yaml, Save::Rename);
    let reload = server.reload();
    reload.assert_rejected();
    assert_eq!(reload.errors.len(), 1, "{reload:?}");
    assert_located(&reload.errors[0], &rules, 4, 32, None);
    server.assert_alive();
    assert_eq!(server.reply("hi"), "hello v1");
    let health = server.health();
    assert_health_shows_rejected(&health, &reload, &old_digest);
    assert_eq!(health["rules"], 3, "{health}");
    assert_eq!(health["reloads_rejected"], 1, "{health}");

    // Valid YAML, but a rule that does not compile: the error names the rule.
    let bad_regex = BASE_RULES.replace("keyword: hi }", "keyword: { regex: '^hi(' } }");
    save(&rules, &bad_regex, Save::InPlace);
    let reload = server.reload();
    reload.assert_rejected();
    assert_located(&reload.errors[0], &rules, 3, 31, Some("hello"));
    assert!(reload.errors[0].contains("invalid regex"), "{reload:?}");
    server.assert_alive();
    assert_eq!(server.reply("hi"), "hello v1");
    let health = server.health();
    assert_health_shows_rejected(&health, &reload, &old_digest);
    assert_eq!(health["reloads_rejected"], 2, "{health}");

    // Fixed: the next SIGHUP applies it.
    save(
        &rules,
        &BASE_RULES.replace("hello v1", "hello v3"),
        Save::Rename,
    );
    server.reload().assert_applied();
    assert_eq!(server.reply("hi"), "hello v3");
    let health = server.health();
    assert_eq!(health["last_reload"]["outcome"], "applied", "{health}");
    assert_eq!(health["last_reload"]["errors"], serde_json::json!([]));
    assert_ne!(health["digest"], old_digest, "{health}");
    assert_eq!(health["reloads_applied"], 1, "{health}");
    assert_eq!(health["reloads_rejected"], 2, "{health}");
    server.assert_alive();
}

#[test]
fn missing_template_keeps_the_old_rules_until_restored() {
    let scratch = base("missing");
    let rules = scratch.path("rules.yaml");
    let greet = scratch.path("templates/greet.hbs");
    let mut server = Server::start(&scratch);
    let old_digest = server.health()["digest"].clone();

    // The template is gone, and another rule changed in the same edit: nothing applies.
    std::fs::remove_file(&greet).unwrap();
    save(
        &rules,
        &BASE_RULES.replace("hello v1", "hello v2"),
        Save::Rename,
    );
    let reload = server.reload();
    reload.assert_rejected();
    assert_eq!(reload.errors.len(), 1, "{reload:?}");
    // `greet` in `{ template: greet }` is on line 7, column 32.
    assert_located(&reload.errors[0], &rules, 7, 32, Some("greet"));
    assert!(
        reload.errors[0].contains("template `greet` not found"),
        "{reload:?}"
    );
    server.assert_alive();
    // The old rule set is whole: its compiled template still answers.
    assert_eq!(server.reply("greet"), "greet v1 to oUser");
    assert_eq!(server.reply("hi"), "hello v1");
    let health = server.health();
    assert_health_shows_rejected(&health, &reload, &old_digest);
    assert_eq!(health["templates"], 1, "{health}");

    // Restored (with new text): the next SIGHUP applies both edits.
    save(&greet, "greet v2 to {{FromUserName}}", Save::InPlace);
    server.reload().assert_applied();
    assert_eq!(server.reply("greet"), "greet v2 to oUser");
    assert_eq!(server.reply("hi"), "hello v2");
    let health = server.health();
    assert_eq!(health["last_reload"]["outcome"], "applied", "{health}");
    assert_eq!(
        health["digest"].as_str(),
        Some(digest_of(&scratch).as_str())
    );
    server.assert_alive();
}

#[test]
fn rename_and_in_place_saves_both_reload() {
    let scratch = base("save");
    let rules = scratch.path("rules.yaml");
    let greet = scratch.path("templates/greet.hbs");
    let mut server = Server::start(&scratch);

    let steps = [
        (Save::Rename, Save::InPlace, 2),
        (Save::InPlace, Save::Rename, 3),
        (Save::Rename, Save::Rename, 4),
        (Save::InPlace, Save::InPlace, 5),
    ];
    for (rules_style, template_style, v) in steps {
        save(
            &rules,
            &BASE_RULES.replace("hello v1", &format!("hello v{v}")),
            rules_style,
        );
        save(&greet, &format!("greet v{v}"), template_style);
        server.reload().assert_applied();
        assert_eq!(server.reply("hi"), format!("hello v{v}"), "{rules_style:?}");
        assert_eq!(
            server.reply("greet"),
            format!("greet v{v}"),
            "{template_style:?}"
        );
    }

    // An editor that writes in place in two pieces, with a SIGHUP landing between them:
    // whatever the first reload saw, the SIGHUP after the save leaves the whole file live.
    let full = BASE_RULES.replace("hello v1", "hello v6, written in two pieces");
    let (head, tail) = full.split_at(full.find("v6").unwrap() + 1);
    let mut file = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&rules)
        .unwrap();
    file.write_all(head.as_bytes()).unwrap();
    file.flush().unwrap();
    server.signal("HUP");
    std::thread::sleep(Duration::from_millis(30));
    file.write_all(tail.as_bytes()).unwrap();
    drop(file);
    server.signal("HUP");
    server.wait_for_digest(&digest_of(&scratch));
    assert_eq!(server.reply("hi"), "hello v6, written in two pieces");
    server.assert_alive();
}

#[test]
fn quick_sighups_end_with_the_newest_file_live() {
    let scratch = base("burst");
    let rules = scratch.path("rules.yaml");
    let mut server = Server::start(&scratch);

    for round in 0..5 {
        let (older, newer) = (2 * round + 2, 2 * round + 3);
        save(
            &rules,
            &BASE_RULES.replace("hello v1", &format!("hello v{older}")),
            Save::Rename,
        );
        server.signal("HUP");
        save(
            &rules,
            &BASE_RULES.replace("hello v1", &format!("hello v{newer}")),
            Save::InPlace,
        );
        server.signal("HUP");
        let newest = digest_of(&scratch);
        server.wait_for_digest(&newest);
        assert_eq!(server.reply("hi"), format!("hello v{newer}"));
        assert_eq!(server.health()["digest"].as_str(), Some(newest.as_str()));
    }
    // The kernel merges a signal that arrives while the same one is pending, so a burst
    // may be seen as fewer SIGHUPs; each round was seen at least once.
    let requested = server.count("reload_requested");
    assert!((5..=10).contains(&requested), "{requested}");
    server.assert_alive();
}

#[test]
fn sighup_right_after_start_reloads_rather_than_kills() {
    // `server_started` is what ops (and these tests) wait for before signalling; the
    // handlers must already be installed when it is logged.
    for _ in 0..3 {
        let scratch = base("early");
        let mut server = Server::start(&scratch);
        server.reload().assert_applied();
        server.assert_alive();
        assert_eq!(server.reply("hi"), "hello v1");
    }
}

#[test]
fn reload_log_names_added_removed_and_changed_rules() {
    let scratch = base("changes");
    let mut server = Server::start(&scratch);

    let edited = r#"rules:
  - name: hello
    when: { keyword: [hi, hello] }
    reply: { text: "hello v1" }
  - name: price
    when: { keyword: price }
    reply: { text: "99" }
  - name: fallback
    reply: { text: "fallback" }
"#;
    save(&scratch.path("rules.yaml"), edited, Save::Rename);
    let reload = server.reload();
    reload.assert_applied();
    assert_eq!(reload.names("added"), ["price"]);
    assert_eq!(reload.names("removed"), ["greet"]);
    assert_eq!(reload.names("changed"), ["hello"]);
    assert_eq!(reload.line["rules"], 3);
    assert_eq!(reload.line["templates_changed"], false);
    assert_eq!(
        reload.line["path"].as_str(),
        Some(scratch.path("rules.yaml").to_str().unwrap())
    );
    let digest = reload.line["digest"].as_str().unwrap();
    assert_eq!(digest, digest_of(&scratch));
    assert_eq!(server.health()["digest"], digest);
    assert_eq!(server.reply("price"), "99");
    // `greet` is gone: its keyword now falls through to `fallback`.
    assert_eq!(server.reply("greet"), "fallback");

    // A reload of unchanged files applies and says that nothing changed.
    let reload = server.reload();
    reload.assert_applied();
    for field in ["added", "removed", "changed"] {
        assert!(reload.names(field).is_empty(), "{reload:?}");
    }
    assert_eq!(reload.line["digest"], digest);
    server.assert_alive();
}

#[test]
fn sigterm_answers_requests_in_flight_then_exits_0() {
    const CLIENTS: usize = 8;
    let scratch = base("term");
    let mut server = Server::start(&scratch);
    let addr = server.addr;

    // Each client sends its headers and waits; the body follows only once the server is
    // shutting down, so every request is in flight when SIGTERM lands.
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut go = Vec::new();
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let (go_tx, go_rx) = mpsc::channel::<()>();
        go.push(go_tx);
        let ready = ready_tx.clone();
        clients.push(std::thread::spawn(move || {
            let body = text_message(if i % 2 == 0 { "hi" } else { "greet" });
            let mut client = Client::connect(addr);
            // A whole first request proves that the server has accepted this connection.
            let first = client.send(
                "POST",
                &signed_target(),
                text_message("hi").as_bytes(),
                false,
            );
            assert_eq!(first.unwrap().0, 200);
            client.write_head("POST", &signed_target(), body.len(), true);
            ready.send(()).unwrap();
            go_rx.recv_timeout(WAIT).unwrap();
            let stream = client.reader.get_mut();
            stream.write_all(body.as_bytes()).unwrap();
            stream.flush().unwrap();
            client.read_response()
        }));
    }
    for _ in 0..CLIENTS {
        ready_rx.recv_timeout(WAIT).unwrap();
    }
    // Give the server a moment to read the headers.
    std::thread::sleep(Duration::from_millis(200));

    server.signal("TERM");
    server.log.wait_until("shutting_down", |events| {
        events
            .iter()
            .any(|e| event_name(e) == "shutting_down" && e["signal"] == "SIGTERM")
            .then_some(())
    });
    // Let the graceful stop get under way before the bodies arrive.
    std::thread::sleep(Duration::from_millis(200));
    for tx in &go {
        tx.send(()).unwrap();
    }

    for (i, client) in clients.into_iter().enumerate() {
        let (status, body) = client
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!(status, 200, "client {i}: {body}");
        let want = if i % 2 == 0 {
            "hello v1"
        } else {
            "greet v1 to oUser"
        };
        assert_eq!(content_of(&body), Some(want), "client {i}: {body}");
    }

    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{status}");
    assert_eq!(server.count("server_stopped"), 1);
    assert_eq!(
        server.log.handled.load(Ordering::Relaxed),
        2 * CLIENTS as u64
    );
}

/// Rules version `i` of the load test: every valid version answers `v{i}`, inline and
/// through its own template `v{i}.hbs`, around filler rules that shift with each version.
fn load_rules(i: usize, broken: Option<usize>) -> String {
    let mut y = String::from("rules:\n");
    for j in i..i + 20 {
        y.push_str(&format!(
            "  - {{ name: kw{j}, when: {{ keyword: [kw{j}, k{j}] }}, reply: {{ text: \"kw {j}\" }} }}\n"
        ));
    }
    let inline = match broken {
        Some(0) => format!("\"v{i}"), // an unterminated string: bad YAML
        _ => format!("\"v{i}\""),
    };
    let keyword = match broken {
        Some(2) => "{ regex: '^(inline' }".to_owned(), // a regex that does not compile
        _ => "inline".to_owned(),
    };
    y.push_str(&format!(
        "  - name: inline\n    when: {{ keyword: {keyword} }}\n    reply: {{ text: {inline} }}\n"
    ));
    // With `broken == Some(1)` the template `v{i}` is never written: a missing template.
    y.push_str(&format!(
        "  - name: template\n    when: {{ keyword: template }}\n    reply: {{ text: {{ template: \"v{i}\" }} }}\n"
    ));
    y
}

#[derive(Default)]
struct Tally {
    requests: u64,
    ok: u64,
    failures: u64,
    examples: Vec<String>,
    per_version: BTreeMap<usize, u64>,
}

impl Tally {
    fn fail(&mut self, what: String) {
        self.failures += 1;
        if self.examples.len() < 10 {
            self.examples.push(what);
        }
    }
}

#[test]
fn reloads_under_load_serve_exactly_one_version() {
    const RELOADS: usize = 24;
    const CLIENTS: usize = 4;
    // A third of the versions are broken, in three ways by turns.
    let broken = |i: usize| (i > 0 && i.is_multiple_of(3)).then_some((i / 3) % 3);
    let valid = move |k: usize| k <= RELOADS && broken(k).is_none();

    let scratch = Scratch::new("load");
    scratch
        .write("rules.yaml", &load_rules(0, None))
        .write("templates/v0.hbs", "v0\n");
    let server = Server::start(&scratch);
    let addr = server.addr;
    let started = Instant::now();

    // The newest valid version whose files have begun to be written.
    let written = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (written, stop) = (Arc::clone(&written), Arc::clone(&stop));
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut tally = Tally::default();
                let mut client = Client::connect(addr);
                let mut last = 0;
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let content = if tally.requests % 2 == 0 {
                        "inline"
                    } else {
                        "template"
                    };
                    tally.requests += 1;
                    let sent = client.send(
                        "POST",
                        &signed_target(),
                        text_message(content).as_bytes(),
                        false,
                    );
                    let (status, body) = match sent {
                        Ok(answer) => answer,
                        Err(e) => {
                            tally.fail(format!("client {c}: {e}"));
                            client = Client::connect(addr);
                            continue;
                        }
                    };
                    let version = content_of(&body)
                        .and_then(|t| t.strip_prefix('v'))
                        .and_then(|n| n.parse::<usize>().ok());
                    match version {
                        Some(k)
                            if status == 200
                                && valid(k)
                                && k >= last
                                && k <= written.load(Ordering::SeqCst) =>
                        {
                            last = k;
                            tally.ok += 1;
                            *tally.per_version.entry(k).or_default() += 1;
                        }
                        _ => tally.fail(format!(
                            "client {c}, after v{last}: {content} → {status} {body}"
                        )),
                    }
                }
                tally
            })
        })
        .collect();

    let rules = scratch.path("rules.yaml");
    let (mut applied, mut rejected, mut live) = (0, 0, 0);
    let mut live_digest = Value::Null;
    for i in 1..=RELOADS {
        let style = if i % 2 == 0 {
            Save::Rename
        } else {
            Save::InPlace
        };
        if broken(i).is_none() {
            save(
                &scratch.path(&format!("templates/v{i}.hbs")),
                &format!("v{i}\n"),
                Save::Rename,
            );
            written.store(i, Ordering::SeqCst);
        }
        save(&rules, &load_rules(i, broken(i)), style);
        let reload = server.reload();
        if broken(i).is_some() {
            reload.assert_rejected();
            rejected += 1;
        } else {
            reload.assert_applied();
            applied += 1;
            live = i;
            live_digest = reload.line["digest"].clone();
        }
        // The main thread sees the version it expects, right after the reload.
        assert_eq!(
            server.reply("inline"),
            format!("v{live}"),
            "after reload {i}"
        );
        assert_eq!(
            server.reply("template"),
            format!("v{live}"),
            "after reload {i}"
        );
        // Let the clients post on this version for a while.
        std::thread::sleep(Duration::from_millis(120));
    }
    stop.store(true, Ordering::SeqCst);

    let mut total = Tally::default();
    let mut per_client = Vec::new();
    for client in clients {
        let tally = client.join().unwrap();
        per_client.push(tally.requests);
        total.requests += tally.requests;
        total.ok += tally.ok;
        total.failures += tally.failures;
        total.examples.extend(tally.examples);
        for (k, n) in tally.per_version {
            *total.per_version.entry(k).or_default() += n;
        }
    }
    let versions: Vec<String> = total
        .per_version
        .iter()
        .map(|(k, n)| format!("v{k}={n}"))
        .collect();
    // Written to the process's stderr directly, so that it shows in the test output (and
    // the CI log) even when the test harness captures `println!`.
    let report = format!(
        "load: {} requests from {CLIENTS} clients {per_client:?} in {:.1} s over {RELOADS} \
         SIGHUPs ({applied} applied, {rejected} rejected): {} answered 200 with exactly one \
         valid version's reply, {} failed; replies per version: {}",
        total.requests,
        started.elapsed().as_secs_f64(),
        total.ok,
        total.failures,
        versions.join(" ")
    );
    println!("{report}");
    writeln!(io::stderr().lock(), "{report}").unwrap();

    assert_eq!(total.failures, 0, "{report}\n{:#?}", total.examples);
    assert_eq!(total.ok, total.requests);
    assert!(per_client.iter().all(|&n| n > 0), "{report}");
    assert!(total.per_version.len() > 1, "{report}");
    assert_eq!((applied, rejected), (16, 8));
    let health = server.health();
    assert_eq!(health["reloads_applied"], 16, "{health}");
    assert_eq!(health["reloads_rejected"], 8, "{health}");
    assert_eq!(health["digest"], live_digest, "{health}");
    // Every push has its log line; the reader thread may still be catching up.
    let until = Instant::now() + WAIT;
    while server.log.handled.load(Ordering::Relaxed) < total.requests && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(server.log.handled.load(Ordering::Relaxed) >= total.requests);
}

// ---------------------------------------------------------------------------------------
// Files that are not what they seem, and signals at awkward times (issue 19's probe).

fn mkfifo(path: &Path) {
    let made = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
}

/// A FIFO among the templates wedged the reload thread for good (later SIGHUPs were logged
/// and never applied), and a rules file or template linked to /dev/zero or /dev/urandom grew
/// until the OOM killer came. Now each is refused with its path, and the next reload of
/// good files applies.
#[test]
fn fifos_and_devices_are_refused_and_later_reloads_still_apply() {
    let scratch = base("devices");
    let mut server = Server::start(&scratch);
    let rules = scratch.path("rules.yaml");
    let saved = scratch.path("rules.saved");

    let fifo = scratch.path("templates/x.hbs");
    mkfifo(&fifo);
    let reload = server.reload();
    reload.assert_rejected();
    assert_eq!(
        reload.errors[0],
        format!(
            "{}: cannot read templates: is not a regular file (a FIFO, a device or a socket)",
            fifo.display()
        )
    );
    std::fs::remove_file(&fifo).unwrap();

    for device in ["/dev/zero", "/dev/urandom"] {
        std::fs::rename(&rules, &saved).unwrap();
        std::os::unix::fs::symlink(device, &rules).unwrap();
        let reload = server.reload();
        reload.assert_rejected();
        assert!(
            reload.errors[0].contains("cannot read rules file: is not a regular file"),
            "{reload:?}"
        );
        std::fs::remove_file(&rules).unwrap();
        std::fs::rename(&saved, &rules).unwrap();

        let template = scratch.path("templates/dev.hbs");
        std::os::unix::fs::symlink(device, &template).unwrap();
        server.reload().assert_rejected();
        std::fs::remove_file(&template).unwrap();
    }
    let big = scratch.path("templates/big.hbs");
    std::fs::write(
        &big,
        "x".repeat(wxrules::rules::MAX_TEMPLATE_FILE as usize + 1),
    )
    .unwrap();
    let reload = server.reload();
    reload.assert_rejected();
    assert!(
        reload.errors[0].contains("over the size limit"),
        "{reload:?}"
    );
    std::fs::remove_file(&big).unwrap();

    assert_eq!(server.reply("hi"), "hello v1");
    server.reload().assert_applied();
    assert_eq!(server.health()["reloads_running"], 0);
    server.signal("TERM");
    assert!(server.wait_exit().success());
}

/// Two directories linking to each other made the walk exponential (`check` hung too);
/// now each directory is walked once.
#[test]
fn symlink_loops_among_the_templates_end() {
    let scratch = base("loops");
    for dir in ["a", "b"] {
        std::fs::create_dir_all(scratch.path(&format!("templates/{dir}"))).unwrap();
    }
    for (from, to) in [
        ("a/a", "../a"),
        ("a/b", "../b"),
        ("b/a", "../a"),
        ("b/b", "../b"),
    ] {
        std::os::unix::fs::symlink(to, scratch.path(&format!("templates/{from}"))).unwrap();
    }
    let mut server = Server::start(&scratch);
    server.reload().assert_applied();
    server.assert_alive();
    let check = Command::new(env!("CARGO_BIN_EXE_wxrules"))
        .arg("check")
        .arg("--rules")
        .arg(scratch.path("rules.yaml"))
        .arg("--templates")
        .arg(scratch.path("templates"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
}

/// A SIGHUP during the first load killed the process (exit 129, nothing logged): the
/// handlers were installed after the load. Now a SIGHUP then becomes a reload once the
/// server runs.
#[test]
fn sighup_during_the_initial_load_is_a_reload_not_a_kill() {
    let scratch = Scratch::new("hup-during-load");
    let mut yaml = String::from("rules:\n");
    // Enough rules that the first load takes a while in a debug build.
    for i in 0..20_000 {
        yaml.push_str(&format!(
            "  - name: r{i}\n    when: {{ keyword: k{i} }}\n    reply: {{ text: \"{i}\" }}\n"
        ));
    }
    yaml.push_str(
        "  - name: hello\n    when: { keyword: hi }\n    reply: { text: \"hello v1\" }\n",
    );
    scratch.write("rules.yaml", &yaml);
    let mut server = Server::start_with(&scratch, |child, log| {
        log.wait_until("rules_loading", |events| {
            events
                .iter()
                .any(|e| event_name(e) == "rules_loading")
                .then_some(())
        });
        let status = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    });
    // The SIGHUP during the load is served as a reload after the start.
    server.reload_after(0).assert_applied();
    server.assert_alive();
    assert_eq!(server.reply("hi"), "hello v1");
}

/// The probe's crash: `price.hbs` = `A {{> help}}`, `help.hbs` = `B {{> price}}` passed
/// `check`, went live on SIGHUP, and the first push that rendered it overflowed the stack
/// (exit 134, and again after every restart). Now the reload is rejected with the cycle,
/// the old rules keep serving, and a fresh start refuses the files.
#[test]
fn partials_that_include_each_other_are_rejected_not_rendered() {
    let scratch = base("partials");
    let mut server = Server::start(&scratch);
    scratch
        .write("templates/greet.hbs", "A {{> help}}")
        .write("templates/help.hbs", "B {{> greet}}");
    let reload = server.reload();
    reload.assert_rejected();
    assert_eq!(
        reload.errors,
        [format!(
            "{}:1:3: partials include each other, so it can never finish rendering: help → greet → help",
            scratch.path("templates/help.hbs").display()
        )]
    );
    assert_eq!(server.reply("greet"), "greet v1 to oUser");
    server.assert_alive();

    let start = Command::new(env!("CARGO_BIN_EXE_wxrules"))
        .arg("--rules")
        .arg(scratch.path("rules.yaml"))
        .arg("--templates")
        .arg(scratch.path("templates"))
        .args(["--listen", "127.0.0.1:0"])
        .env("WXRULES_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(start.status.code(), Some(78), "{start:?}");
}

/// `(a{1000}){1000}` passed a reload (only its syntax was checked) and `check` alone
/// refused it; the loader the two share now refuses it for both.
#[test]
fn a_regex_too_big_to_compile_is_rejected_on_reload() {
    let scratch = base("big-regex");
    let mut server = Server::start(&scratch);
    let rules = BASE_RULES.replace(
        "  - name: fallback",
        "  - name: huge\n    when: { keyword: { regex: '(a{1000}){1000}' } }\n    reply: { text: never }\n  - name: fallback",
    );
    save(&scratch.path("rules.yaml"), &rules, Save::Rename);
    let reload = server.reload();
    reload.assert_rejected();
    assert!(
        reload.errors[0].ends_with(
            "rule `huge`: invalid regex: Compiled regex exceeds size limit of 1048576 bytes."
        ),
        "{reload:?}"
    );
    assert_eq!(server.reply("hi"), "hello v1");
    server.assert_alive();
}

/// Open sockets of process `pid`.
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.filter_map(Result::ok)
                .filter(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// The probe held ~20,000 connections open with unsigned, stalled bodies until the server
/// ran out of file descriptors and valid pushes timed out. Now an unsigned push is refused
/// before its body is read, so it holds nothing; clients that stall in their headers are
/// cut off by the head timeout; and the server never holds more connections than its cap
/// (fitted under the open-file limit), so it recovers and answers pushes again.
#[test]
fn stalled_connections_stay_under_the_cap_and_the_server_recovers() {
    const CAP: usize = 16;
    let scratch = base("cap");
    let server = Server::launch(&scratch, &["--max-connections", "16"], |_, _| {});
    let started = server
        .log
        .lock()
        .iter()
        .find(|e| event_name(e) == "server_started")
        .cloned()
        .unwrap();
    assert_eq!(started["max_connections"], CAP);
    let pid = server.child.id();
    // The listener, the signal pipes and the like.
    let idle = sockets(pid);

    // Unsigned bodies that stop: each is refused at once, its body never awaited.
    for _ in 0..(CAP * 4) {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream
            .write_all(b"POST /wechat?signature=x&timestamp=1&nonce=2 HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n<xml>")
            .unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 403");
    }
    assert_eq!(server.reply("hi"), "hello v1");

    // Heads that stop half-way: the server holds at most CAP of them.
    let mut flood = Vec::new();
    for _ in 0..(CAP * 2) {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        let _ = stream.write_all(b"POST /wechat HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        flood.push(stream);
    }
    // The refused connections of the first phase close on their own time (on a loaded
    // machine, after these are opened): give the count a few seconds to settle (ten: on
    // a 2-core machine building in parallel, three were seen not to be enough).
    std::thread::sleep(Duration::from_millis(500));
    let settle = Instant::now() + Duration::from_secs(10);
    let mut open = sockets(pid);
    while open > idle + CAP && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(100));
        open = sockets(pid);
    }
    assert!(open <= idle + CAP, "{open} sockets open, {idle} when idle");
    // Cut off by the head timeout (5 s) batch by batch, they leave; pushes are answered.
    let until = Instant::now() + Duration::from_secs(30);
    let mut status = 0;
    while Instant::now() < until {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let body = text_message("hi");
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            signed_target(),
            body.len()
        );
        let mut answer = String::new();
        if stream.write_all(request.as_bytes()).is_ok()
            && stream.read_to_string(&mut answer).is_ok()
        {
            status = answer
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if status == 200 {
                break;
            }
        }
    }
    assert_eq!(status, 200);
    assert!(sockets(pid) <= idle + CAP);
    drop(flood);
}

// ---------------------------------------------------------------------------------------
// The admin port, `wxrules reload`, `--pid-file`, `wxrules send` and `--watch`.

/// `wxrules ARGS` with `env`; its exit code and stdout.
fn wxrules_cli(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wxrules"))
        .args(args)
        .env_remove("WXRULES_ADMIN_TOKEN")
        .env_remove("WXRULES_AES_KEY")
        .env_remove("WXRULES_APPID")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn admin_call(server: &Server, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let headers = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    Client::connect(server.admin.unwrap())
        .send_with(method, path, &headers, b"", true)
        .unwrap()
}

#[test]
fn the_admin_port_reloads_over_http_and_keeps_health_and_metrics_off_the_public_port() {
    let scratch = base("admin");
    let pid_file = scratch.path("wxrules.pid");
    let pid_arg = pid_file.to_str().unwrap().to_owned();
    let mut server = Server::launch(
        &scratch,
        &["--admin-listen", "127.0.0.1:0", "--pid-file", &pid_arg],
        |_, _| {},
    );
    let admin = server.admin.expect("admin_listen in server_started");
    assert_ne!(admin, server.addr);
    // The pid file, for `kill -HUP "$(cat …)"`.
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        server.child.id().to_string()
    );

    // The public port: pushes only.
    for path in ["/healthz", "/metrics", "/-/reload"] {
        let method = if path == "/-/reload" { "POST" } else { "GET" };
        let (status, _) = Client::connect(server.addr)
            .send(method, path, b"", true)
            .unwrap();
        assert_eq!(status, 404, "{path} on the public port");
    }
    assert_eq!(server.reply("hi"), "hello v1");

    // The admin port: health (times in RFC 3339), metrics.
    let (status, body) = admin_call(&server, "GET", "/healthz", None);
    assert_eq!(status, 200, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    let loaded_at = health["loaded_at"].as_str().unwrap();
    assert!(
        loaded_at.len() == 20 && loaded_at.ends_with('Z') && loaded_at.as_bytes()[10] == b'T',
        "{loaded_at}"
    );
    let (status, body) = admin_call(&server, "GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(
        body.contains("wxrules_requests_total{outcome=\"replied\"} 1"),
        "{body}"
    );

    // A good edit, reloaded over HTTP: the answer says what changed.
    save(
        &scratch.path("rules.yaml"),
        &BASE_RULES.replace("hello v1", "hello v2").replace(
            "  - name: fallback",
            "  - name: bye\n    when: { keyword: bye }\n    reply: { text: bye }\n  - name: fallback",
        ),
        Save::Rename,
    );
    let (status, body) = admin_call(&server, "POST", "/-/reload", None);
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["outcome"], "applied");
    assert_eq!(report["rules"], 4);
    assert_eq!(report["added"], serde_json::json!(["bye"]));
    assert_eq!(report["changed"], serde_json::json!(["hello"]));
    assert_eq!(report["digest"].as_str().unwrap(), digest_of(&scratch));
    assert_eq!(server.reply("hi"), "hello v2");

    // A broken edit: 422, every error as file:line:col, the old rules still serve.
    save(
        &scratch.path("rules.yaml"),
        &BASE_RULES.replace("when: { keyword: hi }", "when: { keyword: { regex: '(' } }"),
        Save::InPlace,
    );
    let (status, body) = admin_call(&server, "POST", "/-/reload", None);
    assert_eq!(status, 422, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["outcome"], "rejected");
    let error = report["errors"][0].as_str().unwrap();
    assert_located(error, &scratch.path("rules.yaml"), 3, 31, Some("hello"));
    assert_eq!(server.reply("hi"), "hello v2");

    // `wxrules reload` says the same, with its exit code.
    let url = format!("http://{admin}");
    let (code, stdout, _) = wxrules_cli(&["reload", "--admin", &url], &[]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.starts_with("rejected: the previous rules keep serving\nerror: "),
        "{stdout}"
    );
    save(&scratch.path("rules.yaml"), BASE_RULES, Save::Rename);
    let (code, stdout, _) = wxrules_cli(&["reload", "--admin", &url], &[]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.starts_with("applied: 3 rules, digest "), "{stdout}");
    assert!(stdout.contains("  removed: bye\n"), "{stdout}");
    assert_eq!(server.reply("hi"), "hello v1");

    // The pid file goes with the process.
    server.signal("TERM");
    assert!(server.wait_exit().success());
    assert!(!pid_file.exists());
}

#[test]
fn an_admin_token_guards_the_admin_port_and_is_required_off_loopback() {
    let scratch = base("admin-token");
    let token = "an-admin-token-of-some-length";
    let server = Server::launch_env(
        &scratch,
        &["--admin-listen", "127.0.0.1:0"],
        &[("WXRULES_ADMIN_TOKEN", token)],
        |_, _| {},
    );
    for given in [None, Some("wrong-token-wrong-token"), Some("")] {
        let (status, body) = admin_call(&server, "GET", "/metrics", given);
        assert_eq!(status, 401, "{given:?}: {body}");
        assert!(!body.contains(token));
        let (status, _) = admin_call(&server, "POST", "/-/reload", given);
        assert_eq!(status, 401);
        // Probes send no token: `/healthz` is open.
        assert_eq!(admin_call(&server, "GET", "/healthz", given).0, 200);
    }
    assert_eq!(admin_call(&server, "GET", "/metrics", Some(token)).0, 200);
    let url = format!("http://{}", server.admin.unwrap());
    let (code, stdout, _) = wxrules_cli(&["reload", "--admin", &url], &[]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("set WXRULES_ADMIN_TOKEN"), "{stdout}");
    let (code, stdout, _) = wxrules_cli(
        &["reload", "--admin", &url],
        &[("WXRULES_ADMIN_TOKEN", token)],
    );
    assert_eq!(code, Some(0), "{stdout}");
    server.wait_for_digest(&digest_of(&scratch));

    // Off loopback, no token: the server does not start, and says why.
    let (code, _, stderr) = wxrules_cli(
        &[
            "serve",
            "--rules",
            scratch.path("rules.yaml").to_str().unwrap(),
            "--templates",
            scratch.path("templates").to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "0.0.0.0:0",
        ],
        &[("WXRULES_TOKEN", TOKEN)],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr,
        "error: --admin-listen 0.0.0.0:0 is not a loopback address: set WXRULES_ADMIN_TOKEN, which admin clients send as `Authorization: Bearer …`\n"
    );
    let (code, _, stderr) = wxrules_cli(
        &["serve", "--admin-listen", "127.0.0.1:0"],
        &[("WXRULES_TOKEN", TOKEN), ("WXRULES_ADMIN_TOKEN", "short")],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr,
        "error: WXRULES_ADMIN_TOKEN must be at least 16 characters\n"
    );
}

#[test]
fn send_signs_plain_and_safe_pushes_and_prints_the_answer_decrypted() {
    const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const APP_ID: &str = "wx2c2769f8efd9abc2";
    let scratch = base("send");
    let server = Server::launch_env(
        &scratch,
        &[],
        &[("WXRULES_AES_KEY", AES_KEY), ("WXRULES_APPID", APP_ID)],
        |_, _| {},
    );
    let url = format!("http://{}/wechat", server.addr);
    let keys = [
        ("WXRULES_TOKEN", TOKEN),
        ("WXRULES_AES_KEY", AES_KEY),
        ("WXRULES_APPID", APP_ID),
    ];
    let (code, stdout, stderr) = wxrules_cli(&["send", "--url", &url, "--text", "hi"], &keys);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(content_of(&stdout), Some("hello v1"), "{stdout}");
    assert!(stdout.contains("<ToUserName><![CDATA[o_wxrules_send_user]]></ToUserName>"));

    // Safe mode: the push goes encrypted, the answer comes back encrypted and is shown
    // decrypted, its signature checked.
    let (code, stdout, stderr) = wxrules_cli(
        &[
            "send",
            "--url",
            &url,
            "--safe",
            "--text",
            "greet",
            "--from",
            "oSafeUser",
        ],
        &keys,
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        content_of(&stdout),
        Some("greet v1 to oSafeUser"),
        "{stdout}"
    );
    // Both answered by the rules (`message_handled` lines are counted, not kept).
    let until = Instant::now() + WAIT;
    while server.log.handled.load(Ordering::Relaxed) < 2 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.log.handled.load(Ordering::Relaxed), 2);

    // A wrong token: the status, and exit 1.
    let (code, stdout, _) = wxrules_cli(
        &["send", "--url", &url, "--text", "hi"],
        &[("WXRULES_TOKEN", "not-the-token")],
    );
    assert_eq!(code, Some(1));
    assert!(stdout.starts_with("403 Forbidden"), "{stdout}");
    let (code, _, stderr) = wxrules_cli(
        &["send", "--url", &url, "--safe", "--text", "hi"],
        &[("WXRULES_TOKEN", TOKEN)],
    );
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr,
        "error: --safe needs WXRULES_AES_KEY and WXRULES_APPID\n"
    );
}

#[test]
fn watch_reloads_on_rename_saves_in_place_saves_and_template_edits() {
    let scratch = base("watch");
    let server = Server::launch(&scratch, &["--watch"], |_, _| {});
    assert_eq!(server.reply("hi"), "hello v1");

    save(
        &scratch.path("rules.yaml"),
        &BASE_RULES.replace("hello v1", "hello v2"),
        Save::Rename,
    );
    server.wait_for_digest(&digest_of(&scratch));
    assert_eq!(server.reply("hi"), "hello v2");

    save(
        &scratch.path("rules.yaml"),
        &BASE_RULES.replace("hello v1", "hello v3"),
        Save::InPlace,
    );
    server.wait_for_digest(&digest_of(&scratch));
    assert_eq!(server.reply("hi"), "hello v3");

    save(
        &scratch.path("templates/greet.hbs"),
        "greet v2 to {{FromUserName}}\n",
        Save::Rename,
    );
    server.wait_for_digest(&digest_of(&scratch));
    assert_eq!(server.reply("greet"), "greet v2 to oUser");

    // A broken save is rejected like a broken SIGHUP; the old rules keep serving.
    let before = server.outcomes();
    save(&scratch.path("rules.yaml"), "rules: [", Save::InPlace);
    server.reload_after(before).assert_rejected();
    assert_eq!(server.reply("hi"), "hello v3");
    // An editor's swap file is not a change.
    let before = server.count("reload_requested");
    std::fs::write(scratch.path(".rules.yaml.swp"), "x").unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(server.count("reload_requested"), before);
}

/// A Kubernetes ConfigMap volume: `rules.yaml` is a link through `..data`, a link to a
/// timestamped directory; an update writes a new directory and renames a new `..data` over
/// the old one, so `rules.yaml` itself never changes.
#[test]
fn watch_reloads_when_a_configmap_swaps_its_data_link() {
    use std::os::unix::fs::symlink;
    let scratch = base("watch-configmap");
    let dir = scratch.dir.clone();
    std::fs::create_dir_all(dir.join("..2026_11_30_1")).unwrap();
    std::fs::write(dir.join("..2026_11_30_1/rules.yaml"), BASE_RULES).unwrap();
    symlink("..2026_11_30_1", dir.join("..data")).unwrap();
    std::fs::remove_file(dir.join("rules.yaml")).unwrap();
    symlink("..data/rules.yaml", dir.join("rules.yaml")).unwrap();
    let server = Server::launch(&scratch, &["--watch"], |_, _| {});
    assert_eq!(server.reply("hi"), "hello v1");
    std::fs::create_dir_all(dir.join("..2026_11_30_2")).unwrap();
    std::fs::write(
        dir.join("..2026_11_30_2/rules.yaml"),
        BASE_RULES.replace("hello v1", "hello from the configmap"),
    )
    .unwrap();
    symlink("..2026_11_30_2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    server.log.wait_until("a reload after the swap", |events| {
        events
            .iter()
            .any(|e| event_name(e) == "rules_reloaded")
            .then_some(())
    });
    assert_eq!(server.reply("hi"), "hello from the configmap");
}

/// `--watch` with the files given relative to the working directory (the default
/// `--templates templates` is): file events name absolute paths, and a template edit must
/// still be seen.
#[test]
fn watch_sees_template_edits_with_relative_paths() {
    let scratch = base("watch-relative");
    let server = Server::launch(
        &scratch,
        &[
            "--rules",
            "rules.yaml",
            "--templates",
            "templates",
            "--watch",
        ],
        |_, _| {},
    );
    assert_eq!(server.reply("greet"), "greet v1 to oUser");
    save(
        &scratch.path("templates/greet.hbs"),
        "greet v3 to {{FromUserName}}\n",
        Save::InPlace,
    );
    server.wait_for_digest(&digest_of(&scratch));
    assert_eq!(server.reply("greet"), "greet v3 to oUser");
}

/// Hardening 2: the OS watches a directory by inode. A release directory switched under a
/// `current` link, a templates directory replaced by `mv`, or deleted and made again, left
/// `--watch` on the old inode and later edits unseen, silently. Now the names are followed:
/// the watch is logged lost and restored, and the files as they are then are reloaded.
#[test]
fn watch_follows_names_when_directories_are_replaced() {
    use std::os::unix::fs::symlink;
    let scratch = Scratch::new("watch-names");
    let dir = scratch.dir.clone();
    for release in ["r1", "r2"] {
        scratch
            .write(&format!("{release}/rules.yaml"), BASE_RULES)
            .write(&format!("{release}/templates/greet.hbs"), GREET_V1);
    }
    symlink("r1", dir.join("current")).unwrap();
    let server = Server::launch(
        &scratch,
        &[
            "--rules",
            "current/rules.yaml",
            "--templates",
            "current/templates",
            "--watch",
        ],
        |_, _| {},
    );
    assert_eq!(server.reply("hi"), "hello v1");

    // A deploy: the next release is written, then `current` switches to it.
    std::fs::write(
        dir.join("r2/rules.yaml"),
        BASE_RULES.replace("hello v1", "hello r2"),
    )
    .unwrap();
    symlink("r2", dir.join("current.new")).unwrap();
    std::fs::rename(dir.join("current.new"), dir.join("current")).unwrap();
    server
        .log
        .wait_until("the watch restored after the switch", |events| {
            events
                .iter()
                .any(|e| event_name(e) == "watch_restored")
                .then_some(())
        });
    poll_until("r2 served", || server.reply("hi") == "hello r2");
    // An edit in the new release is seen: the watch is on it now.
    save(
        &dir.join("r2/templates/greet.hbs"),
        "greet r2 to {{FromUserName}}\n",
        Save::Rename,
    );
    poll_until("the edit in r2 served", || {
        server.reply("greet") == "greet r2 to oUser"
    });

    // The templates directory replaced by `mv`, then deleted and made again.
    scratch.write("staging/greet.hbs", "greet moved to {{FromUserName}}\n");
    std::fs::rename(dir.join("r2/templates"), dir.join("old-templates")).unwrap();
    std::fs::rename(dir.join("staging"), dir.join("r2/templates")).unwrap();
    poll_until("the moved-in templates served", || {
        server.reply("greet") == "greet moved to oUser"
    });
    std::fs::remove_dir_all(dir.join("r2/templates")).unwrap();
    scratch.write(
        "r2/templates/greet.hbs",
        "greet again to {{FromUserName}}\n",
    );
    poll_until("the remade templates served", || {
        server.reply("greet") == "greet again to oUser"
    });
    save(
        &dir.join("r2/templates/greet.hbs"),
        "greet last to {{FromUserName}}\n",
        Save::InPlace,
    );
    poll_until("an edit in the remade directory served", || {
        server.reply("greet") == "greet last to oUser"
    });
    assert!(
        server.count("watch_lost") >= 3,
        "{}",
        server.count("watch_lost")
    );
}

/// Waits, up to `WAIT`, until `done` holds; checked every 50 ms.
fn poll_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "waited {WAIT:?} for {what} in vain"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A raw request to `addr` with this `Host`; the status.
fn status_with_host(addr: SocketAddr, request_line: &str, host: &str, headers: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "{request_line}\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Hardening 2, the admin port: a body that stalls is timed out (408) as on the public port
/// (2,000 stalled `/api/try` bodies held 2,000 descriptors); wrong tokens are logged and,
/// past ten a minute from one address, refused (429); the Host rule holds with a token (a
/// rebinding page read `/healthz` once a token was set); `/healthz` quotes errors only to a
/// request with the token; a token of the wrong shape is refused at start, by its name.
#[test]
fn the_admin_port_bounds_bodies_and_token_attempts_and_keeps_the_host_rule() {
    let scratch = base("admin-hardening");
    let token = "an-admin-token-of-some-length";
    let server = Server::launch_env(
        &scratch,
        &[
            "--admin-listen",
            "127.0.0.1:0",
            "--admin-host",
            "ops.example",
        ],
        &[("WXRULES_ADMIN_TOKEN", token)],
        |_, _| {},
    );
    let admin = server.admin.unwrap();

    // A stalled body: 408 once the body timeout passes, and the connection closed.
    let started = Instant::now();
    let mut stream = TcpStream::connect(admin).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "POST /api/try HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"text\":"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    // The Host rule, with a token: loopback, a named host, an address pass; a name does not.
    let healthz = "GET /healthz HTTP/1.1";
    assert_eq!(status_with_host(admin, healthz, "127.0.0.1", ""), 200);
    assert_eq!(
        status_with_host(admin, healthz, "ops.example:9180", ""),
        200
    );
    assert_eq!(status_with_host(admin, healthz, "10.1.2.3:9180", ""), 200);
    assert_eq!(
        status_with_host(admin, healthz, "rebind.example:9180", ""),
        403
    );

    // A broken reload: its errors counted in /healthz, quoted only with the token.
    save(
        &scratch.path("rules.yaml"),
        "rules: [ { name: x, when: { keyword: secretword } }, oops",
        Save::InPlace,
    );
    let (status, _) = admin_call(&server, "POST", "/-/reload", Some(token));
    assert_eq!(status, 422);
    let (_, open) = admin_call(&server, "GET", "/healthz", None);
    assert!(open.contains(r#""error_count":1"#), "{open}");
    assert!(!open.contains("rules.yaml:"), "{open}");
    let (_, full) = admin_call(&server, "GET", "/healthz", Some(token));
    assert!(full.contains("rules.yaml:"), "{full}");

    // Wrong tokens: logged, and past ten a minute this address is refused for a while.
    for _ in 0..10 {
        assert_eq!(
            admin_call(
                &server,
                "GET",
                "/metrics",
                Some("a-wrong-token-a-wrong-token")
            )
            .0,
            401
        );
    }
    assert_eq!(
        admin_call(
            &server,
            "GET",
            "/metrics",
            Some("a-wrong-token-a-wrong-token")
        )
        .0,
        429
    );
    assert_eq!(admin_call(&server, "GET", "/metrics", Some(token)).0, 429);
    server.log.wait_until("ten signin_refused lines", |events| {
        (events
            .iter()
            .filter(|e| event_name(e) == "signin_refused")
            .count()
            >= 10)
            .then_some(())
    });
    let logged = server
        .log
        .lock()
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!logged.contains("a-wrong-token"), "a token reached the log");
    drop(server);

    // Tokens of the wrong shape are refused at start, by the variable's name only.
    for (bad, why) in [
        (
            "with a space in the middle",
            "visible ASCII characters only",
        ),
        (&"x".repeat(5000)[..], "at most 512 characters"),
    ] {
        let (code, _, stderr) = wxrules_cli(
            &["serve", "--admin-listen", "127.0.0.1:0"],
            &[("WXRULES_TOKEN", TOKEN), ("WXRULES_ADMIN_TOKEN", bad)],
        );
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains("WXRULES_ADMIN_TOKEN must be"), "{stderr}");
        assert!(stderr.contains(why), "{stderr}");
        assert!(!stderr.contains(bad), "{stderr}");
    }
}

/// Hardening 2: `GET / HTTP/9.9` at 32 connections made actix write 91,010 ERROR lines
/// (11.7 MB) in 5 s. Lines another crate writes because of a client are now bounded: 20 a
/// second from one source, then one line saying how many were left out.
#[test]
fn lines_a_client_makes_other_crates_write_are_bounded() {
    let scratch = base("log-flood");
    let server = Server::start(&scratch);
    let started = Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let addr = server.addr;
            std::thread::spawn(move || {
                for _ in 0..250 {
                    if let Ok(mut stream) = TcpStream::connect(addr) {
                        let _ = stream.write_all(b"GET / HTTP/9.9\r\nHost: a\r\n\r\n");
                        let mut sink = Vec::new();
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                        let _ = stream.read_to_end(&mut sink);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let seconds = started.elapsed().as_secs() + 2;
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(server.reply("hi"), "hello v1");
    let events = server.log.lock().clone();
    let foreign = events
        .iter()
        .filter(|e| {
            e["target"]
                .as_str()
                .is_some_and(|t| !t.starts_with("wxrules"))
        })
        .count();
    assert!(
        foreign as u64 <= 20 * (seconds + 1),
        "{foreign} lines of other crates in {seconds} s"
    );
    // The rest are counted: most of the 2,000 requests made a line, written or left out.
    let (_, metrics) = Client::connect(server.addr)
        .send_with("GET", "/metrics", "", b"", true)
        .unwrap();
    let suppressed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wxrules_log_lines_suppressed_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        foreign as f64 + suppressed >= 1000.0,
        "{foreign} written, {suppressed} left out"
    );
}
