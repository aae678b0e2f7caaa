//! What the browser tests share: the real `wxrules` binary on free loopback ports with its
//! admin port, signed pushes to it, and a headless Chromium (Debian's `chromium` and
//! `chromedriver`, which `scripts/test` installs) driven over WebDriver by fantoccini.
//! Included by the tests that drive the page (`#[path = "common/browser.rs"] mod browser;`).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::common::{self, sign, Scratch, TOKEN};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// The longest any wait may take.
pub const WAIT: Duration = Duration::from_secs(20);
/// An OpenID as WeChat gives them, and how the dashboard must show it.
pub const OPENID: &str = "o6_bmjrPTlm6_2sgVt7hMZOPfL2M";
pub const MASKED: &str = "o6_…L2M";

/// A child process killed when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `wxrules` serving a scratch copy of the shipped rules, with its admin port.
pub struct Server {
    _child: Killed,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub scratch: Scratch,
}

/// A scratch directory with a copy of the shipped rules and templates.
pub fn shipped_scratch(tag: &str) -> Scratch {
    let scratch = Scratch::new(tag);
    let shipped = common::root().join("tests/data/shipped");
    scratch.write(
        "rules.yaml",
        &std::fs::read_to_string(shipped.join("rules.yaml")).unwrap(),
    );
    for entry in std::fs::read_dir(shipped.join("templates")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        scratch.write(
            &format!("templates/{name}"),
            &std::fs::read_to_string(&path).unwrap(),
        );
    }
    scratch
}

impl Server {
    pub fn start(tag: &str, admin_token: Option<&str>) -> Server {
        let scratch = shipped_scratch(tag);
        // Relative paths, as ops run it from the rules' directory: the page shows them.
        Server::launch(
            scratch,
            &["--rules", "rules.yaml", "--templates", "templates"],
            admin_token,
        )
    }

    /// `wxrules ARGS` in `scratch`'s directory, on free loopback ports.
    pub fn launch(scratch: Scratch, args: &[&str], admin_token: Option<&str>) -> Server {
        let env: Vec<(&str, &str)> = admin_token
            .map(|token| ("WXRULES_ADMIN_TOKEN", token))
            .into_iter()
            .collect();
        Server::launch_with(scratch, args, &env)
    }

    /// `launch`, with these variables set.
    pub fn launch_with(scratch: Scratch, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wxrules"));
        command
            .current_dir(&scratch.dir)
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .env("WXRULES_TOKEN", TOKEN)
            .env_remove("WXRULES_APPSECRET")
            .env_remove("WXRULES_ADMIN_TOKEN")
            .env("WXRULES_WECHAT_API", "http://127.0.0.1:9")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command.envs(env.iter().copied());
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (started, addresses) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if event["event"] == "server_started" {
                    let _ = started.send((
                        event["listen"]
                            .as_str()
                            .unwrap()
                            .parse::<SocketAddr>()
                            .unwrap(),
                        event["admin_listen"]
                            .as_str()
                            .unwrap()
                            .parse::<SocketAddr>()
                            .unwrap(),
                    ));
                }
            }
        });
        let (public, admin) = addresses
            .recv_timeout(WAIT)
            .expect("the server did not start");
        Server {
            _child: Killed(child),
            public,
            admin,
            scratch,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn rules_path(&self) -> PathBuf {
        self.scratch.sources().rules
    }

    /// A push signed as WeChat signs it; returns the answer.
    pub async fn push(&self, xml: &str) -> String {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string();
        // A nonce of its own: a signed query carries one body.
        static SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nonce = &format!(
            "20261130{}",
            SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let url = format!(
            "http://{}/wechat?timestamp={ts}&nonce={nonce}&signature={}",
            self.public,
            sign(&[TOKEN, &ts, nonce])
        );
        let response = reqwest::Client::new()
            .post(url)
            .body(xml.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }
}

pub fn text_push(content: &str, msg_id: u64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_dash]]></ToUserName><FromUserName><![CDATA[{OPENID}]]></FromUserName><CreateTime>1796000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>"
    )
}

pub fn click_push(key: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_dash]]></ToUserName><FromUserName><![CDATA[{OPENID}]]></FromUserName><CreateTime>1796000001</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[CLICK]]></Event><EventKey><![CDATA[{key}]]></EventKey></xml>"
    )
}

/// `chromedriver` on a free loopback port, and a headless Chromium session through it.
pub struct Browser {
    pub client: Client,
    _driver: Driver,
}

/// `chromedriver` in a process group of its own, with the Chromium it starts: dropped, the
/// whole group is killed (a test that fails never closes its session, and Chromium outlives
/// a killed chromedriver) and the browser's profile directory removed.
pub struct Driver {
    child: Child,
    profile: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Browser {
    pub async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let chromedriver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `{chromedriver}` ({e}): the dashboard tests need Chromium and its \
                     WebDriver (`apt-get install -y chromium chromium-driver`; .ci/run installs them)"
                )
            });
        let profile =
            std::env::temp_dir().join(format!("wxrules-chromium-{}-{port}", std::process::id()));
        let driver = Driver {
            child: driver,
            profile: profile.clone(),
        };
        let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-extensions",
                    "--window-size=1280,900", "--lang=zh-CN",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object")
        };
        let until = Instant::now() + WAIT;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => break client,
                Err(e) if Instant::now() < until => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no WebDriver session: {e}"),
            }
        };
        Browser {
            client,
            _driver: driver,
        }
    }

    /// Opens the try tab, types `text` into the form's text input, and sends it.
    pub async fn try_text(&self, text: &str) {
        self.find("#tab-try").await.click().await.unwrap();
        self.wait_for("form#try input[name='text']").await;
        self.find("form#try input[name='text']")
            .await
            .send_keys(text)
            .await
            .unwrap();
        self.find("#try-submit").await.click().await.unwrap();
    }

    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client.find(Locator::Css(css)).await.unwrap()
    }

    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map_or(0, |all| all.len())
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap_or_default()
    }

    /// Waits until `done` holds, or fails saying `what`.
    pub async fn wait_until<F, Fut>(&self, what: &str, mut done: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let until = Instant::now() + WAIT;
        while !done().await {
            assert!(Instant::now() < until, "timed out waiting: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_for(&self, css: &str) {
        self.wait_until(css, || async { self.count(css).await > 0 })
            .await;
    }

    pub async fn wait_for_text(&self, css: &str, wanted: &str) {
        let what = format!("`{wanted}` in {css}");
        self.wait_until(&what, || async {
            match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.is_ok_and(|t| t.contains(wanted)),
                Err(_) => false,
            }
        })
        .await;
    }

    /// Every URL the page has loaded (itself, its script and style, every fetch).
    pub async fn requested(&self) -> Vec<String> {
        let urls = self
            .client
            .execute(
                "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource')).map(e => e.name);",
                vec![],
            )
            .await
            .unwrap();
        serde_json::from_value(urls).unwrap()
    }

    /// The browser's log entries that are errors of the page (JavaScript, CSP): Chromium
    /// also logs each answer with a 4xx status as SEVERE (`source: network`), which a
    /// refused reload (422) or a 401 before the token is given are meant to be.
    pub async fn page_errors(&self) -> Vec<Value> {
        let log = self.client.issue_cmd(BrowserLog).await.unwrap();
        log.as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["level"] == "SEVERE" && e["source"] != "network")
            .collect()
    }

    pub async fn screenshot(&self, name: &str) {
        if std::env::var_os("UPDATE_SCREENSHOTS").is_none() {
            return;
        }
        let png = self.client.screenshot().await.unwrap();
        let path = common::root().join(format!("docs/{name}.png"));
        std::fs::write(&path, png).unwrap();
    }
}

/// ChromeDriver's log endpoint (a vendor extension to WebDriver): the browser's console.
#[derive(Debug)]
pub struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.to_owned()))
    }
}
