//! A `redis-server` of a test's own, on a free loopback port (`.ci/run` installs it; a
//! test that needs it fails, not skips, without it).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A `redis-server` of this test's own, on a free loopback port, killed on drop (and its
/// directory, which holds its AOF when it has one, removed).
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// Arguments after the defaults (`--save '' --appendonly no`), which they override.
    extra: Vec<String>,
    dir: std::path::PathBuf,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// With `args` after the defaults: `["--appendonly", "yes"]` persists its writes.
    pub fn start_with(args: &[&str]) -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("wxrules-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = RedisServer {
            port,
            child: None,
            extra: args.iter().map(|a| (*a).to_owned()).collect(),
            dir,
        };
        server.spawn();
        server
    }

    /// Starts it (again, after `kill`: on the same port and directory).
    pub fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .arg("--dir")
            .arg(&self.dir)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `redis-server` ({e}): these tests need it installed \
                     (`apt-get install -y redis-server`; .ci/run installs it)"
                )
            });
        self.child = Some(child);
        let started = Instant::now();
        while !self.answers_ping() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server on port {} did not answer PING within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn get(&self, key: &str) -> Option<String> {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_connection().unwrap();
        redis::cmd("GET").arg(key).query(&mut conn).unwrap()
    }

    /// The length of the stream `key` (0 when there is none).
    pub fn xlen(&self, key: &str) -> usize {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_connection().unwrap();
        redis::cmd("XLEN").arg(key).query(&mut conn).unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every command Redis is sent, as `MONITOR` shows it, without those a script runs
/// inside (`[0 lua]`): what the server asked, one line per command.
pub struct Monitor {
    lines: Arc<std::sync::Mutex<Vec<String>>>,
    port: u16,
}

impl Monitor {
    pub fn start(redis: &RedisServer) -> Monitor {
        let mut stream = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
        stream.write_all(b"MONITOR\r\n").unwrap();
        let mut ok = [0u8; 5];
        stream.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"+OK\r\n");
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = Arc::clone(&lines);
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                if !line.contains(" lua] ") {
                    kept.lock().unwrap().push(line);
                }
            }
        });
        Monitor {
            lines,
            port: redis.port,
        }
    }

    /// The commands seen since the last call, once Redis has shown them all (a marker
    /// sent after them has come through).
    pub fn take(&self) -> Vec<String> {
        let marker = format!("marker-{}", rand_marker());
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(conn, "ECHO {marker}\r\n").unwrap();
        let mut reply = [0u8; 64];
        let _ = conn.read(&mut reply).unwrap();
        let started = Instant::now();
        loop {
            let mut lines = self.lines.lock().unwrap();
            if let Some(at) = lines.iter().position(|l| l.contains(&marker)) {
                let mut taken: Vec<String> = lines.drain(..=at).collect();
                taken.pop();
                return taken;
            }
            drop(lines);
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "MONITOR fell silent"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn rand_marker() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The commands of `seen` that name a key starting with `prefix`.
pub fn touching<'a>(seen: &'a [String], prefix: &str) -> Vec<&'a String> {
    let quoted = format!("\"{prefix}");
    seen.iter().filter(|l| l.contains(&quoted)).collect()
}
