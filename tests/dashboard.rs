//! The dashboard in a real headless Chromium (Debian's `chromium` and `chromedriver`, which
//! `.ci/run` installs), driven over WebDriver by fantoccini, against the real `wxrules`
//! binary with its admin port: the rules are listed and filtered, a try of a keyword shows
//! the rule and the reply, real signed pushes appear with their OpenIDs masked, a good and a
//! broken reload show what changed and where the error is, the token form guards the data,
//! users in conversation states are counted (never named) and a try can start in a state,
//! and through it all no JavaScript error and no request to any host but the server.
//!
//! `UPDATE_SCREENSHOTS=1 cargo test --test dashboard` writes the README's screenshots
//! (`docs/dashboard-*.png`).
#![allow(clippy::unwrap_used)]

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::path::Path;

use browser::{click_push, text_push, Browser, Server, MASKED, OPENID};
use common::{sign, Scratch};
use fantoccini::Locator;
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "dashboard-test-admin-token-0123";

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
    // Rules that do not converse: no states panel, no state to try from.
    assert!(!b.find("#states").await.is_displayed().await.unwrap());
    assert!(!b.find("#try-state-row").await.is_displayed().await.unwrap());
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
    b.screenshot("dashboard-rules").await;
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
    b.screenshot("dashboard-try").await;
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
    b.screenshot("dashboard-pushes").await;

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
    b.screenshot("dashboard-reload-rejected").await;
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
    // A broken file for news, reloaded: with shop selected, the list still shows news,
    // marked (it used to hide a broken account while another was selected).
    server
        .scratch
        .write("news/rules.yaml", "rules: [ { name: broken\n");
    let reloaded = reqwest::Client::new()
        .post(server.url("/-/reload"))
        .send()
        .await
        .unwrap();
    assert!(reloaded.status().is_success() || reloaded.status().as_u16() == 422);
    b.client.goto(&server.url("/#rules")).await.unwrap();
    b.wait_for("#account option[value='shop']").await;
    b.find("#account option[value='shop']")
        .await
        .click()
        .await
        .unwrap();
    b.wait_for("#rules tbody tr[data-rule='shop-hello']").await;
    let option = |value: &'static str| async move {
        let script = format!(
            "return document.querySelector(\"#account option[value='{value}']\").textContent"
        );
        let text = b.client.execute(&script, vec![]).await.unwrap();
        text.as_str().unwrap_or_default().to_owned()
    };
    b.wait_until("news marked in the list", || async {
        option("news").await.starts_with('⚠')
    })
    .await;
    assert_eq!(b.count("#account option").await, 2);
    assert!(!option("shop").await.starts_with('⚠'));
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

/// A push whose rule sends customer-service messages shows, beside "replied", what came of
/// them: here refused (the server has no AppSecret). Before the fix the page said 已回复
/// alone, even when the messages (or a late answer) never went out.
#[tokio::test]
async fn what_follows_a_push_shows_beside_it() {
    let scratch = Scratch::new("dashboard-after");
    scratch.write(
        "rules.yaml",
        "rules:\n  - name: order\n    when: { keyword: 订单 }\n    reply: { text: 查询中 }\n    send: [ { text: 详情一 }, { text: 详情二 } ]\n",
    );
    std::fs::create_dir_all(scratch.path("templates")).unwrap();
    let server = Server::launch(
        scratch,
        &["--rules", "rules.yaml", "--templates", "templates"],
        None,
    );
    assert!(server.push(&text_push("订单", 5)).await.contains("查询中"));
    let browser = Browser::start().await;
    let b = &browser;
    b.client.goto(&server.url("/#pushes")).await.unwrap();
    b.wait_for("#pushes tbody tr.push .badge.after").await;
    let row = b.text("#pushes tbody tr.push").await;
    assert!(
        row.contains("已回复") && row.contains("客服消息被拒 2"),
        "{row}"
    );
    assert_only_from(&b.requested().await, &server);
    let errors = b.page_errors().await;
    assert!(errors.is_empty(), "errors in the page: {errors:#?}");
    browser.client.close().await.unwrap();
}

/// `wxrules` serving the phone-binding flow of `tests/data/conversation-page`.
fn conversation_server(tag: &str) -> Server {
    let scratch = Scratch::new(tag);
    let rules = common::root().join("tests/data/conversation-page/rules.yaml");
    scratch.write("rules.yaml", &std::fs::read_to_string(rules).unwrap());
    Server::launch(
        scratch,
        &["--rules", "rules.yaml", "--templates", "templates"],
        None,
    )
}

/// A text push from `user` rather than the tests' one OpenID.
fn text_from(user: &str, content: &str, msg_id: u64) -> String {
    text_push(content, msg_id).replace(OPENID, user)
}

/// Real signed pushes: users a and b asked to bind (`bind_phone`), c gave a number too
/// (`confirm`).
async fn put_users_in_states(server: &Server) {
    for (user, id) in [
        ("o_state_user_a", 100),
        ("o_state_user_b", 101),
        ("o_state_user_c", 102),
    ] {
        let answer = server.push(&text_from(user, "绑定", id)).await;
        assert!(answer.contains("11 位手机号"), "{answer}");
    }
    let answer = server
        .push(&text_from("o_state_user_c", "13800138000", 103))
        .await;
    assert!(answer.contains("确认绑定 13800138000"), "{answer}");
}

async fn try_json(server: &Server, body: &Value) -> (u16, Value) {
    let answer = reqwest::Client::new()
        .post(server.url("/api/try"))
        .json(body)
        .send()
        .await
        .unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap())
}

/// `/api/rules`' `states`, and the whole answer as text.
async fn states_of(server: &Server) -> (Value, String) {
    let text = reqwest::get(server.url("/api/rules"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rules: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(rules["converses"], true, "{text}");
    (rules["states"].clone(), text)
}

#[tokio::test]
async fn a_try_starts_in_a_state_and_the_users_in_each_state_are_counted() {
    let server = conversation_server("dashboard-states-api");

    // From `bind_phone`, a number: the state's rule answers, and the user would be in
    // `confirm` with the number kept.
    let (status, tried) = try_json(
        &server,
        &json!({"text": "13800138000", "state": {"name": "bind_phone"}}),
    )
    .await;
    assert_eq!(status, 200, "{tried}");
    assert_eq!(tried["rule"]["name"], "number");
    assert_eq!(
        tried["reply"]["content"],
        "确认绑定 13800138000？回复「确认」。"
    );
    assert_eq!(
        tried["state"]["before"],
        json!({"name": "bind_phone", "vars": {}, "tries": 0})
    );
    assert_eq!(
        tried["state"]["after"],
        json!({"name": "confirm", "vars": {"phone": "13800138000"}, "tries": 0})
    );
    // From `confirm` with its var: the reply reads it, and the conversation ends.
    let (status, tried) = try_json(
        &server,
        &json!({"text": "确认", "state": {"name": "confirm", "vars": {"phone": "13900139000"}, "tries": 1}}),
    )
    .await;
    assert_eq!(status, 200, "{tried}");
    assert_eq!(tried["rule"]["name"], "confirmed");
    assert_eq!(tried["reply"]["content"], "已绑定手机 13900139000。");
    assert_eq!(tried["state"]["before"]["tries"], 1);
    assert_eq!(tried["state"]["after"], Value::Null);
    // In no state, the number is nobody's answer.
    let (status, tried) = try_json(&server, &json!({"text": "13800138000"})).await;
    assert_eq!(status, 200, "{tried}");
    assert_eq!(tried["rule"], Value::Null);
    assert_eq!(tried["state"], json!({"before": null, "after": null}));
    // A var's value is cut as a rule's `set:` cuts it (1,024 bytes, at a character's end).
    let (status, tried) = try_json(
        &server,
        &json!({"text": "随便", "state": {"name": "confirm", "vars": {"phone": "号".repeat(400)}}}),
    )
    .await;
    assert_eq!(status, 200, "{tried}");
    assert_eq!(tried["rule"]["name"], "confirm-other");
    let kept = tried["state"]["after"]["vars"]["phone"].as_str().unwrap();
    assert!(
        kept.len() <= 1024 && kept.len() > 1000 && kept.chars().all(|c| c == '号'),
        "{kept}"
    );

    // A state that cannot be: 400, saying why.
    let many: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("v{i}"), json!("x"))).collect();
    for (state, why) in [
        (json!({"name": "a b"}), "not a state's name"),
        (json!({"name": "none"}), "not a state's name"),
        (json!({"name": " "}), "empty"),
        (json!({"name": "x".repeat(65)}), "at most 64 bytes"),
        (
            json!({"name": "bind_phone", "vars": many}),
            "at most 32 vars",
        ),
        (
            json!({"name": "bind_phone", "vars": {" ": "x"}}),
            "a var's name is empty",
        ),
        (
            json!({"name": "bind_phone", "tries": -1}),
            "not the JSON expected",
        ),
        (
            json!({"name": "bind_phone", "turns": 1}),
            "not the JSON expected",
        ),
        (json!({"vars": {}}), "not the JSON expected"),
    ] {
        let (status, answer) = try_json(&server, &json!({"text": "1", "state": state})).await;
        assert_eq!(status, 400, "{state}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(why), "{state}: {error}");
    }

    // No try wrote a user's state.
    let (states, _) = states_of(&server).await;
    assert_eq!(
        states,
        json!([{"name": "bind_phone", "users": 0}, {"name": "confirm", "users": 0}])
    );
    // Real pushes put users in states: counted, none of them named.
    put_users_in_states(&server).await;
    let (states, text) = states_of(&server).await;
    assert_eq!(
        states,
        json!([{"name": "bind_phone", "users": 2}, {"name": "confirm", "users": 1}])
    );
    assert!(!text.contains("o_state_user"), "an OpenID in {text}");
    // One leaves the conversation, another confirms: the counts follow.
    assert!(server
        .push(&text_from("o_state_user_a", "取消", 104))
        .await
        .contains("已取消"));
    assert!(server
        .push(&text_from("o_state_user_c", "确认", 105))
        .await
        .contains("已绑定手机 13800138000"));
    let (states, _) = states_of(&server).await;
    assert_eq!(
        states,
        json!([{"name": "bind_phone", "users": 1}, {"name": "confirm", "users": 0}])
    );
}

#[tokio::test]
async fn the_page_counts_users_in_states_and_tries_from_one() {
    let server = conversation_server("dashboard-states-page");
    put_users_in_states(&server).await;
    let browser = Browser::start().await;
    let b = &browser;

    // The states panel: each state with its users, no OpenID anywhere.
    b.client.goto(&server.url("/#rules")).await.unwrap();
    b.wait_for("#states li[data-state='confirm']").await;
    assert!(b.find("#states").await.is_displayed().await.unwrap());
    assert!(b.text("#states").await.contains("对话状态"));
    assert_eq!(
        b.text("#states li[data-state='bind_phone'] .users").await,
        "2"
    );
    assert_eq!(b.text("#states li[data-state='confirm'] .users").await, "1");
    assert!(!b.client.source().await.unwrap().contains("o_state_user"));
    // One more user asks while the page is open: a refresh counts them.
    assert!(server
        .push(&text_from("o_state_user_d", "绑定", 106))
        .await
        .contains("11 位手机号"));
    b.find("#rules-refresh").await.click().await.unwrap();
    b.wait_for_text("#states li[data-state='bind_phone'] .users", "3")
        .await;

    // A try from `bind_phone`: the state's rule, its reply, the state after.
    b.find("#tab-try").await.click().await.unwrap();
    let option = "form#try select[name='state'] option[value='bind_phone']";
    b.wait_for(option).await;
    b.find(option).await.click().await.unwrap();
    b.try_text("13800138000").await;
    b.wait_for_text("#try-result .try-rule", "number").await;
    assert!(b
        .text("#try-result .bubble")
        .await
        .contains("确认绑定 13800138000"));
    assert!(b
        .text("#try-result .try-state .state-before")
        .await
        .contains("bind_phone"));
    let after = b.text("#try-result .try-state .state-after").await;
    assert!(
        after.contains("confirm") && after.contains("phone = 13800138000"),
        "{after}"
    );

    // From `confirm` with a var given: the reply reads it, and no state after.
    b.find("form#try select[name='state'] option[value='confirm']")
        .await
        .click()
        .await
        .unwrap();
    b.find("form#try textarea[name='vars']")
        .await
        .send_keys("phone=13900139000")
        .await
        .unwrap();
    let text = b.find("form#try input[name='text']").await;
    text.clear().await.unwrap();
    text.send_keys("确认").await.unwrap();
    b.find("#try-submit").await.click().await.unwrap();
    b.wait_for_text("#try-result .try-rule", "confirmed").await;
    assert!(b
        .text("#try-result .bubble")
        .await
        .contains("已绑定手机 13900139000"));
    assert_eq!(b.text("#try-result .try-state .state-after").await, "无");

    // Vars without a state are not sent: the page says to pick one.
    b.find("form#try select[name='state'] option[value='']")
        .await
        .click()
        .await
        .unwrap();
    b.find("#try-submit").await.click().await.unwrap();
    b.wait_for_text("#try-result .try-error", "请先选择对话状态")
        .await;
    // The try itself changed nobody's state.
    let (states, _) = states_of(&server).await;
    assert_eq!(
        states,
        json!([{"name": "bind_phone", "users": 3}, {"name": "confirm", "users": 1}])
    );

    // In English.
    b.client
        .execute("window.scrollTo(0, 0)", vec![])
        .await
        .unwrap();
    b.find("#lang").await.click().await.unwrap();
    b.wait_for_text("#try-state-row", "Start in state").await;
    b.find("#tab-rules").await.click().await.unwrap();
    b.wait_for_text("#states", "Conversations").await;
    b.wait_for_text("#states li[data-state='confirm']", "1 user")
        .await;

    assert_only_from(&b.requested().await, &server);
    let errors = b.page_errors().await;
    assert!(errors.is_empty(), "errors in the page: {errors:#?}");
    browser.client.close().await.unwrap();
}
