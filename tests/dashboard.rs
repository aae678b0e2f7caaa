//! The dashboard in a real headless Chromium (Debian's `chromium` and `chromedriver`, which
//! `.ci/run` installs), driven over WebDriver by fantoccini, against the real `wxrules`
//! binary with its admin port: the rules are listed and filtered, a try of a keyword shows
//! the rule and the reply, real signed pushes appear with their OpenIDs masked, a good and a
//! broken reload show what changed and where the error is, the token form guards the data,
//! and through it all no JavaScript error and no request to any host but the server.
//!
//! `UPDATE_SCREENSHOTS=1 cargo test --test dashboard` writes the README's screenshots
//! (`docs/dashboard-*.png`).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{sign, Scratch, TOKEN};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// The longest any wait may take.
const WAIT: Duration = Duration::from_secs(20);
/// An OpenID as WeChat gives them, and how the dashboard must show it.
const OPENID: &str = "o6_bmjrPTlm6_2sgVt7hMZOPfL2M";
const MASKED: &str = "o6_…L2M";
const ADMIN_TOKEN: &str = "dashboard-test-admin-token-0123";

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `wxrules` serving a scratch copy of the shipped rules, with its admin port.
struct Server {
    _child: Killed,
    public: SocketAddr,
    admin: SocketAddr,
    scratch: Scratch,
}

impl Server {
    fn start(tag: &str, admin_token: Option<&str>) -> Server {
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
        // Relative paths, as ops run it from the rules' directory: the page shows them.
        Server::launch(
            scratch,
            &["--rules", "rules.yaml", "--templates", "templates"],
            admin_token,
        )
    }

    /// `wxrules ARGS` in `scratch`'s directory, on free loopback ports.
    fn launch(scratch: Scratch, args: &[&str], admin_token: Option<&str>) -> Server {
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
        if let Some(token) = admin_token {
            command.env("WXRULES_ADMIN_TOKEN", token);
        }
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

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    fn rules_path(&self) -> PathBuf {
        self.scratch.sources().rules
    }

    /// A push signed as WeChat signs it; returns the answer.
    async fn push(&self, xml: &str) -> String {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string();
        let nonce = "20261130";
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

fn text_push(content: &str, msg_id: u64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_dash]]></ToUserName><FromUserName><![CDATA[{OPENID}]]></FromUserName><CreateTime>1796000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>"
    )
}

fn click_push(key: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_dash]]></ToUserName><FromUserName><![CDATA[{OPENID}]]></FromUserName><CreateTime>1796000001</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[CLICK]]></Event><EventKey><![CDATA[{key}]]></EventKey></xml>"
    )
}

/// `chromedriver` on a free loopback port, and a headless Chromium session through it.
struct Browser {
    client: Client,
    _driver: Driver,
}

/// `chromedriver` in a process group of its own, with the Chromium it starts: dropped, the
/// whole group is killed (a test that fails never closes its session, and Chromium outlives
/// a killed chromedriver) and the browser's profile directory removed.
struct Driver {
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
    async fn start() -> Browser {
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
    async fn try_text(&self, text: &str) {
        self.find("#tab-try").await.click().await.unwrap();
        self.wait_for("form#try input[name='text']").await;
        self.find("form#try input[name='text']")
            .await
            .send_keys(text)
            .await
            .unwrap();
        self.find("#try-submit").await.click().await.unwrap();
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client.find(Locator::Css(css)).await.unwrap()
    }

    async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map_or(0, |all| all.len())
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap_or_default()
    }

    /// Waits until `done` holds, or fails saying `what`.
    async fn wait_until<F, Fut>(&self, what: &str, mut done: F)
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

    async fn wait_for(&self, css: &str) {
        self.wait_until(css, || async { self.count(css).await > 0 })
            .await;
    }

    async fn wait_for_text(&self, css: &str, wanted: &str) {
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
    async fn requested(&self) -> Vec<String> {
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
    async fn page_errors(&self) -> Vec<Value> {
        let log = self.client.issue_cmd(BrowserLog).await.unwrap();
        log.as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["level"] == "SEVERE" && e["source"] != "network")
            .collect()
    }

    async fn screenshot(&self, name: &str) {
        if std::env::var_os("UPDATE_SCREENSHOTS").is_none() {
            return;
        }
        let png = self.client.screenshot().await.unwrap();
        let path = common::root().join(format!("docs/dashboard-{name}.png"));
        std::fs::write(&path, png).unwrap();
    }
}

/// ChromeDriver's log endpoint (a vendor extension to WebDriver): the browser's console.
#[derive(Debug)]
struct BrowserLog;

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

fn assert_only_from(urls: &[String], server: &Server) {
    let origin = format!("http://{}/", server.admin);
    assert!(!urls.is_empty());
    for url in urls {
        assert!(url.starts_with(&origin), "a request to another host: {url}");
    }
}

fn rule_count(path: &Path) -> usize {
    let sources = wxrules::rules::Sources {
        rules: path.to_owned(),
        templates: path.parent().unwrap().join("templates"),
    };
    wxrules::rules::load(&sources).unwrap().rules.rules().len()
}

#[tokio::test]
async fn the_dashboard_lists_tries_shows_pushes_and_reloads() {
    let server = Server::start("dashboard", None);
    let rules = rule_count(&server.rules_path());
    // Real signed pushes, before the page is opened.
    assert!(server
        .push(&text_push("价格", 1))
        .await
        .contains("本周价格"));
    assert!(server
        .push(&click_push("CONTACT_US"))
        .await
        .contains("联系我们"));

    let browser = Browser::start().await;
    let b = &browser;

    // Rules: every live rule, its hits; the filter.
    b.client.goto(&server.url("/#rules")).await.unwrap();
    b.wait_for("#rules tbody tr[data-rule]").await;
    assert_eq!(b.count("#rules tbody tr[data-rule]").await, rules);
    let price = b.text("#rules tbody tr[data-rule='price']").await;
    assert!(price.contains("关键词 是 价格 或 price"), "{price}");
    assert!(price.contains("rules.yaml:"), "{price}");
    // The real push: one hit, and when.
    assert_eq!(
        b.text("#rules tbody tr[data-rule='price'] td:nth-child(6)")
            .await,
        "1"
    );
    let last = b
        .text("#rules tbody tr[data-rule='price'] td:nth-child(7)")
        .await;
    assert!(last.starts_with("20"), "last hit: {last}");
    assert_eq!(
        b.text("#rules tbody tr[data-rule='welcome'] td:nth-child(6)")
            .await,
        "0"
    );
    assert_eq!(
        b.client
            .find(Locator::Css("html"))
            .await
            .unwrap()
            .attr("lang")
            .await
            .unwrap()
            .as_deref(),
        Some("zh-CN")
    );
    b.screenshot("rules").await;
    b.find("#rules-filter")
        .await
        .send_keys("price")
        .await
        .unwrap();
    b.wait_until("the filter hides `welcome`", || async {
        !b.find("#rules tbody tr[data-rule='welcome']")
            .await
            .is_displayed()
            .await
            .unwrap_or(true)
    })
    .await;
    assert!(b
        .find("#rules tbody tr[data-rule='price']")
        .await
        .is_displayed()
        .await
        .unwrap());
    // Filter cleared, as a user deletes it.
    b.client
        .execute(
            "const f = document.querySelector('#rules-filter'); f.value = ''; f.dispatchEvent(new Event('input', { bubbles: true }));",
            vec![],
        )
        .await
        .unwrap();
    assert_only_from(&b.requested().await, &server);

    // Try a message: the rule, the criteria, the reply as a chat bubble and its XML.
    b.try_text("价格").await;
    b.wait_for_text("#try-result .try-rule", "price").await;
    assert!(b.text("#try-result .bubble").await.contains("本周价格"));
    // Each criterion in the page's language, and what the message holds.
    let criteria = b.text("#try-result .criteria").await;
    assert!(criteria.contains("✓"), "{criteria}");
    assert!(criteria.contains("关键词 是 价格 或 price"), "{criteria}");
    assert!(
        criteria.contains("消息中：keyword = \"价格\""),
        "{criteria}"
    );
    assert!(b
        .text("#try-result .raw-xml")
        .await
        .contains("<MsgType><![CDATA[text]]></MsgType>"));
    b.screenshot("try").await;
    // An event, picked from the list.
    b.find("form#try input[name='text']")
        .await
        .clear()
        .await
        .unwrap();
    b.find("form#try select[name='event'] option[value='subscribe']")
        .await
        .click()
        .await
        .unwrap();
    b.find("#try-submit").await.click().await.unwrap();
    b.wait_for_text("#try-result .try-rule", "welcome").await;
    assert_only_from(&b.requested().await, &server);

    // Recent pushes: the two real ones, and one more while the page is open; OpenIDs masked.
    b.client.goto(&server.url("/#pushes")).await.unwrap();
    b.wait_until("two pushes listed", || async {
        b.count("#pushes tbody tr.push").await >= 2
    })
    .await;
    assert!(server.push(&text_push("帮助", 2)).await.contains("<xml>"));
    b.wait_until("the third push listed", || async {
        b.count("#pushes tbody tr.push").await >= 3
    })
    .await;
    let listed = b.text("#pushes").await;
    assert!(listed.contains(MASKED), "{listed}");
    // Newest first.
    let first = b.text("#pushes tbody tr.push").await;
    assert!(first.contains("帮助"), "{first}");
    assert!(
        listed.contains("price") && listed.contains("menu-contact"),
        "{listed}"
    );
    let source = b.client.source().await.unwrap();
    assert!(!source.contains(OPENID), "an OpenID in the page");
    b.screenshot("pushes").await;

    // Reload: a good file says what changed; the last reload stays visible.
    let path = server.rules_path();
    let good = std::fs::read_to_string(&path).unwrap().replacen(
        "rules:\n",
        "rules:\n  - name: dashboard-added\n    when: { keyword: 仪表盘 }\n    reply: { text: \"added\" }\n  - name: '<img src=x onerror=window.wxPwned=1>'\n    when: { keyword: markup }\n    reply: { text: '<b>bold</b><script>window.wxPwned=2</script>' }\n",
        1,
    );
    std::fs::write(&path, &good).unwrap();
    b.find("#reload").await.click().await.unwrap();
    b.wait_for_text("#reload-result", "dashboard-added").await;
    b.wait_for_text("#last-reload", "已生效").await;
    b.client.goto(&server.url("/#rules")).await.unwrap();
    b.wait_until("the added rules listed", || async {
        b.count("#rules tbody tr[data-rule]").await == rules + 2
    })
    .await;
    // Markup in a rule's name and reply is shown as text, never run.
    assert!(b
        .text("#rules")
        .await
        .contains("<img src=x onerror=window.wxPwned=1>"));
    b.client.goto(&server.url("/#try")).await.unwrap();
    b.wait_for("form#try input[name='text']").await;
    b.find("form#try select[name='event'] option[value='']")
        .await
        .click()
        .await
        .unwrap();
    b.find("form#try input[name='text']")
        .await
        .send_keys("markup")
        .await
        .unwrap();
    b.find("#try-submit").await.click().await.unwrap();
    b.wait_for_text("#try-result .bubble", "<b>bold</b><script>")
        .await;
    let pwned = b
        .client
        .execute(
            "return [window.wxPwned === undefined, document.querySelectorAll('img, b, #try-result script').length];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        pwned,
        json!([true, 0]),
        "markup from the rules ran in the page"
    );
    b.client.goto(&server.url("/#rules")).await.unwrap();
    b.wait_for("#rules tbody tr[data-rule]").await;

    // A broken file: the errors with file:line:col, the old rules kept.
    let broken = good.replacen(
        "reply: { text: \"added\" }",
        "reply: { txet: \"added\" }",
        1,
    );
    std::fs::write(&path, &broken).unwrap();
    b.find("#reload").await.click().await.unwrap();
    let line = broken.lines().position(|l| l.contains("txet")).unwrap() + 1;
    let located = format!("rules.yaml:{line}:");
    b.wait_for_text("#reload-result", &located).await;
    b.wait_for_text("#reload-result", "旧规则继续生效").await;
    b.wait_for_text("#last-reload", "被拒绝").await;
    b.screenshot("reload-rejected").await;
    assert_eq!(b.count("#rules tbody tr[data-rule]").await, rules + 2);

    // The tabs answer the arrow keys, as a tab list does.
    b.find("#tab-rules")
        .await
        .send_keys(&fantoccini::key::Key::Right.to_string())
        .await
        .unwrap();
    b.wait_until("the arrow key opens the next tab", || async {
        b.client
            .current_url()
            .await
            .is_ok_and(|u| u.fragment() == Some("try"))
    })
    .await;
    b.client.goto(&server.url("/#rules")).await.unwrap();
    b.wait_for("#rules tbody tr[data-rule]").await;

    // English at a click.
    b.find("#lang").await.click().await.unwrap();
    b.wait_until("the page in English", || async {
        b.client
            .find(Locator::Css("html"))
            .await
            .unwrap()
            .attr("lang")
            .await
            .ok()
            .flatten()
            .as_deref()
            == Some("en")
    })
    .await;
    b.wait_for_text("#tab-try", "Try").await;
    b.wait_for_text(
        "#rules tbody tr[data-rule='price']",
        "keyword is 价格 or price",
    )
    .await;
    // A try in English (the form still holds `markup`). Scrolled to the top first:
    // the long list of rules leaves the tabs under the sticky top bar.
    b.client
        .execute("window.scrollTo(0, 0)", vec![])
        .await
        .unwrap();
    b.find("#tab-try").await.click().await.unwrap();
    b.find("#try-submit").await.click().await.unwrap();
    b.wait_for_text("#try-result .criteria", "keyword is markup")
        .await;
    assert!(b
        .text("#try-result .criteria")
        .await
        .contains("the message has: keyword = \"markup\""));

    assert_only_from(&b.requested().await, &server);
    let errors = b.page_errors().await;
    assert!(errors.is_empty(), "errors in the page: {errors:#?}");
    browser.client.close().await.unwrap();
}

#[tokio::test]
async fn the_data_needs_the_admin_token_when_one_is_set() {
    let server = Server::start("dashboard-token", Some(ADMIN_TOKEN));
    // The page itself loads without it (it holds no data); the JSON does not.
    let plain = reqwest::Client::new();
    assert_eq!(
        plain.get(server.url("/")).send().await.unwrap().status(),
        200
    );
    // Nor by another spelling of a guarded path.
    for path in [
        "/api/rules",
        "/api/overview",
        "/api/pushes",
        "/metrics",
        "//api/rules",
        "/api/rules/",
        "/API/rules",
        "/ui/app.js/../../api/rules",
        "/ui/../api/rules",
    ] {
        let status = plain.get(server.url(path)).send().await.unwrap().status();
        assert!(status == 401 || status == 404, "{path}: {status}");
    }
    let reload = plain.post(server.url("/-/reload")).send().await.unwrap();
    assert_eq!(reload.status(), 401);
    let health = plain.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let answer = plain
        .post(server.url("/api/try"))
        .body(r#"{"text":"价格"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);

    let browser = Browser::start().await;
    let b = &browser;
    b.client.goto(&server.url("/#rules")).await.unwrap();
    b.wait_until("the token form", || async {
        match b.client.find(Locator::Css("#token-form")).await {
            Ok(form) => form.is_displayed().await.unwrap_or(false),
            Err(_) => false,
        }
    })
    .await;
    assert_eq!(b.count("#rules tbody tr[data-rule]").await, 0);
    b.find("#token-form input[name='token']")
        .await
        .send_keys(ADMIN_TOKEN)
        .await
        .unwrap();
    b.find("#token-form button[type='submit']")
        .await
        .click()
        .await
        .unwrap();
    b.wait_for("#rules tbody tr[data-rule='price']").await;
    assert_only_from(&b.requested().await, &server);
    let errors = b.page_errors().await;
    assert!(errors.is_empty(), "errors in the page: {errors:#?}");
    browser.client.close().await.unwrap();
}

#[tokio::test]
async fn several_accounts_are_picked_from_a_list() {
    let scratch = Scratch::new("dashboard-accounts");
    for (name, token) in [("shop", "shop-token-1"), ("news", "news-token-2")] {
        scratch
            .write(
                &format!("{name}/rules.yaml"),
                &format!("rules:\n  - name: {name}-hello\n    when: {{ keyword: hi }}\n    reply: {{ text: \"{name} says hi\" }}\n"),
            )
            .write(&format!("secrets/{name}"), token);
        std::fs::create_dir_all(scratch.path(&format!("{name}/templates"))).unwrap();
    }
    scratch.write(
        "wxrules.yaml",
        "accounts:\n  - name: shop\n    rules: shop/rules.yaml\n    templates: shop/templates\n    token_file: secrets/shop\n  - name: news\n    rules: news/rules.yaml\n    templates: news/templates\n    token_file: secrets/news\n",
    );
    let server = Server::launch(scratch, &["--config", "wxrules.yaml"], None);
    // A push to the news account, signed with its token.
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let url = format!(
        "http://{}/wechat/news?timestamp={ts}&nonce=7&signature={}",
        server.public,
        sign(&["news-token-2", &ts, "7"])
    );
    let answer = reqwest::Client::new()
        .post(url)
        .body(text_push("hi", 9))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(answer.contains("news says hi"), "{answer}");

    let browser = Browser::start().await;
    let b = &browser;
    b.client.goto(&server.url("/#rules")).await.unwrap();
    b.wait_for("#rules tbody tr[data-rule]").await;
    assert!(b.find("#account").await.is_displayed().await.unwrap());
    assert_eq!(b.count("#account option").await, 2);
    // Each account's own rules.
    b.find("#account option[value='shop']")
        .await
        .click()
        .await
        .unwrap();
    b.wait_for("#rules tbody tr[data-rule='shop-hello']").await;
    assert_eq!(b.count("#rules tbody tr[data-rule='news-hello']").await, 0);
    b.find("#account option[value='news']")
        .await
        .click()
        .await
        .unwrap();
    b.wait_for("#rules tbody tr[data-rule='news-hello']").await;
    assert_eq!(b.count("#rules tbody tr[data-rule='shop-hello']").await, 0);
    // A try runs against the account picked.
    b.try_text("hi").await;
    b.wait_for_text("#try-result .try-rule", "news-hello").await;
    assert!(b.text("#try-result .bubble").await.contains("news says hi"));
    // The news account's push, under its name.
    b.client.goto(&server.url("/#pushes")).await.unwrap();
    b.wait_until("the push listed", || async {
        b.count("#pushes tbody tr.push").await >= 1
    })
    .await;
    let listed = b.text("#pushes").await;
    assert!(
        listed.contains("news-hello") && listed.contains(MASKED),
        "{listed}"
    );
    assert_only_from(&b.requested().await, &server);
    let errors = b.page_errors().await;
    assert!(errors.is_empty(), "errors in the page: {errors:#?}");
    browser.client.close().await.unwrap();
}

#[tokio::test]
async fn other_sites_pages_cannot_drive_the_admin_port() {
    let server = Server::start("dashboard-foreign", None);
    let client = reqwest::Client::new();
    let status = |request: reqwest::RequestBuilder| async move {
        request.send().await.unwrap().status().as_u16()
    };
    // A name pointed at 127.0.0.1 by another site (DNS rebinding) is not let in.
    let rebound = client
        .get(server.url("/api/rules"))
        .header("Host", "evil.example:9180");
    assert_eq!(status(rebound).await, 403);
    // A form another site's page posts: refused, whether the browser says so by `Origin`
    // or by `Sec-Fetch-Site`.
    let reload = || client.post(server.url("/-/reload"));
    assert_eq!(
        status(reload().header("Origin", "http://evil.example")).await,
        403
    );
    assert_eq!(
        status(reload().header("Sec-Fetch-Site", "cross-site")).await,
        403
    );
    // `try` takes JSON only (a form cannot send it without a preflight).
    let try_price = |content_type: &'static str| {
        client
            .post(server.url("/api/try"))
            .header("Content-Type", content_type)
            .body(r#"{"text":"价格"}"#)
    };
    assert_eq!(status(try_price("text/plain")).await, 415);
    // The page itself, scripts and curl: as before.
    let origin = format!("http://{}", server.admin);
    let answer = try_price("application/json")
        .header("Origin", &origin)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let tried: Value = answer.json().await.unwrap();
    assert_eq!(tried["rule"]["name"], "price");
    assert_eq!(status(reload()).await, 200);
    let localhost = format!("http://localhost:{}/api/overview", server.admin.port());
    assert_eq!(status(client.get(localhost)).await, 200);
}
