//! Changing replies in the page, in a real headless Chromium against the real `wxrules`
//! binary: an editor signs in, changes a reply and adds a keyword rule, applies them, and
//! pushes get the new replies; the rules file differs only in the edited rule's lines; a
//! draft that fails `check` or a rule test cannot be applied and shows why; a hand edit on
//! disk makes the apply a conflict that writes nothing; the history rolls back byte for
//! byte; in a git work tree each change is a commit authored by the editor; viewers and
//! anonymous visitors get no edit controls and the API refuses their writes.
//!
//! `UPDATE_SCREENSHOTS=1 cargo test --test editor` writes the README's screenshots
//! (`docs/editor-*.png`).
#![allow(clippy::unwrap_used)]

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::path::Path;
use std::process::Command;

use browser::{click_push, text_push, Browser, Server};
use common::Scratch;
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "editor-test-admin-token-0123";
const ALICE_TOKEN: &str = "editor-test-alice-token-0123";
const VICTOR_TOKEN: &str = "editor-test-victor-token-012";

/// A scratch copy of the shipped rules and templates, with rule tests of its own.
fn shipped_scratch(tag: &str) -> Scratch {
    let scratch = browser::shipped_scratch(tag);
    scratch.write(
        "tests.yaml",
        "cases:\n  - name: the price list\n    text: 价格\n    rule: price\n    reply_contains: 本周价格\n  - name: like menu\n    event: CLICK\n    event_key: V1001_GOOD\n    rule: menu-like\n",
    );
    scratch
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn single(scratch: Scratch, token: Option<&str>) -> Server {
    Server::launch(
        scratch,
        &["--rules", "rules.yaml", "--templates", "templates"],
        token,
    )
}

/// Opens the page and gives the token when it asks.
async fn signed_in(b: &Browser, server: &Server, token: &str) {
    b.client.goto(&server.url("/")).await.unwrap();
    b.wait_for("#token-form:not([hidden]) input[name='token']")
        .await;
    b.find("#token-form input[name='token']")
        .await
        .send_keys(token)
        .await
        .unwrap();
    b.find("#token-form button[type='submit']")
        .await
        .click()
        .await
        .unwrap();
    b.wait_for("#rules tbody tr[data-rule='price']").await;
}

/// Replaces the text of the form's field `css` with `text` (again, when the page redrew
/// the field meanwhile).
async fn fill(b: &Browser, css: &str, text: &str) {
    retry(b, css, |field| async move {
        field.clear().await?;
        field.send_keys(text).await
    })
    .await;
}

/// Clicks `css`, in the middle of the window (not under the sticky top bar), once it is
/// there.
async fn click(b: &Browser, css: &str) {
    retry(b, css, |button| async move {
        b.client
            .execute(
                "arguments[0].scrollIntoView({block: 'center'});",
                vec![serde_json::to_value(&button).unwrap()],
            )
            .await?;
        button.click().await
    })
    .await;
}

/// Does `act` on the element `css`, found again and tried again while the page redraws it
/// (a stale element, one not clickable yet), up to `browser::WAIT`.
async fn retry<F, Fut>(b: &Browser, css: &str, act: F)
where
    F: Fn(fantoccini::elements::Element) -> Fut,
    Fut: std::future::Future<Output = Result<(), fantoccini::error::CmdError>>,
{
    let until = std::time::Instant::now() + browser::WAIT;
    loop {
        let done = match b.client.find(fantoccini::Locator::Css(css)).await {
            Ok(element) => act(element).await,
            Err(e) => Err(e),
        };
        match done {
            Ok(()) => return,
            Err(e) if std::time::Instant::now() > until => panic!("{css}: {e}"),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

/// The page logged no JavaScript error.
async fn assert_no_page_errors(b: &Browser) {
    let errors = b.page_errors().await;
    assert!(errors.is_empty(), "{errors:?}");
}

/// Waits until the draft's apply button is on.
async fn applicable(b: &Browser) {
    b.wait_until("the draft may be applied", || async {
        b.find("#draft-apply")
            .await
            .attr("disabled")
            .await
            .unwrap()
            .is_none()
    })
    .await;
}

/// Waits until the draft can be applied, then applies it and waits for the answer.
async fn apply(b: &Browser) {
    applicable(b).await;
    click(b, "#draft-apply").await;
    b.wait_for_text("#draft-result", "已生效").await;
}

/// The lines of `after` that differ from `before`'s (both with as many lines).
fn changed_lines(before: &str, after: &str) -> Vec<(usize, String)> {
    let (b, a): (Vec<&str>, Vec<&str>) =
        (before.split('\n').collect(), after.split('\n').collect());
    assert_eq!(b.len(), a.len(), "an edit in place keeps the line count");
    b.iter()
        .zip(&a)
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(i, (_, y))| (i + 1, (*y).to_owned()))
        .collect()
}

/// The lines `after` has beyond `before`'s, when it holds all of them in order (else a
/// failed assertion).
fn inserted(before: &str, after: &str) -> Vec<String> {
    let mut wanted = before.lines().peekable();
    let mut added = Vec::new();
    for line in after.lines() {
        if wanted.peek() == Some(&line) {
            wanted.next();
        } else {
            added.push(line.to_owned());
        }
    }
    assert!(
        wanted.peek().is_none(),
        "a line of before is gone: {:?}",
        wanted.peek()
    );
    added
}

#[tokio::test]
async fn an_editor_changes_a_reply_adds_a_rule_and_rolls_back_in_a_git_work_tree() {
    let scratch = shipped_scratch("editor-git");
    git(&scratch.dir, &["init", "-q", "-b", "main"]);
    git(&scratch.dir, &["add", "-A"]);
    git(
        &scratch.dir,
        &[
            "-c",
            "user.name=ops",
            "-c",
            "user.email=ops@example.com",
            "commit",
            "-qm",
            "rules",
        ],
    );
    let server = single(scratch, Some(ADMIN_TOKEN));
    let rules_path = server.rules_path();
    let original = std::fs::read_to_string(&rules_path).unwrap();
    let b = Browser::start().await;
    signed_in(&b, &server, ADMIN_TOKEN).await;
    b.wait_for_text("#who", "admin").await;

    // Change the like menu's reply.
    click(&b, "[data-edit-rule='menu-like']").await;
    b.wait_for("form#edit-rule textarea[name='text']").await;
    fill(
        &b,
        "form#edit-rule textarea[name='text']",
        "多谢点赞！{{FromUserName}}",
    )
    .await;
    click(&b, "#edit-save").await;
    b.wait_for_text("#draft-diff", "多谢点赞！").await;
    b.wait_for_text("#draft-tests", "2").await;
    b.client
        .execute("document.querySelector('#draft').scrollIntoView();", vec![])
        .await
        .unwrap();
    b.screenshot("editor-draft").await;
    apply(&b).await;
    assert!(server
        .push(&click_push("V1001_GOOD"))
        .await
        .contains("多谢点赞！o6_bmjrPTlm6_2sgVt7hMZOPfL2M"));
    let after_edit = std::fs::read_to_string(&rules_path).unwrap();
    let changed = changed_lines(&original, &after_edit);
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(
        changed[0].1,
        "    reply: { text: \"多谢点赞！{{FromUserName}}\" }"
    );
    // The commit is the editor's, and holds the rules file alone.
    assert_eq!(
        git(&server.scratch.dir, &["log", "-1", "--format=%an"]).trim(),
        "admin"
    );
    assert_eq!(
        git(
            &server.scratch.dir,
            &["show", "--name-only", "--format=", "HEAD"]
        )
        .trim(),
        "rules.yaml"
    );
    assert!(git(&server.scratch.dir, &["log", "-1", "--format=%B"]).contains("Wxrules-Account:"));

    // Add a keyword rule: it goes before the catch-all rules.
    click(&b, "#add-rule").await;
    b.wait_for("#add-rule-form input[name='name']").await;
    fill(&b, "#add-rule-form input[name='name']", "refund").await;
    fill(
        &b,
        "#add-rule-form textarea[name='keywords']",
        "退款, refund",
    )
    .await;
    fill(&b, "#add-rule-form textarea[name='text']", "退款请联系客服").await;
    click(&b, "#add-save").await;
    b.wait_for_text("#draft-diff", "name: refund").await;
    // The try panel answers from the draft.
    click(&b, "#tab-try").await;
    fill(&b, "form#try input[name='text']", "退款").await;
    click(&b, "#try-submit").await;
    b.wait_for_text("#try-result", "refund").await;
    b.wait_for_text("#try-result", "退款请联系客服").await;
    click(&b, "#tab-rules").await;
    apply(&b).await;
    assert!(server
        .push(&text_push("退款", 7001))
        .await
        .contains("退款请联系客服"));
    let after_add = std::fs::read_to_string(&rules_path).unwrap();
    assert!(after_add.contains("  - name: refund\n"));
    // Everything of the file before is still there, in order: an insertion only.
    let added = inserted(&after_edit, &after_add);
    assert_eq!(added[0], "  - name: refund", "{added:?}");
    assert!(
        added.iter().all(|l| l.is_empty()
            || l.contains("refund")
            || l.contains("退款")
            || l.starts_with("    ")),
        "{added:?}"
    );
    assert!(added.len() <= 5, "{added:?}");

    // The history lists both; rolling back the rule's addition restores the file byte for
    // byte.
    click(&b, "#tab-history").await;
    b.wait_until("two changes in the history", || async {
        b.count("#history li[data-change]").await == 2
    })
    .await;
    click(&b, "#history li:first-child [data-show-diff]").await;
    b.wait_for_text("#history li:first-child pre.diff", "refund")
        .await;
    b.screenshot("editor-history").await;
    b.client
        .execute("window.confirm = () => true;", vec![])
        .await
        .unwrap();
    click(&b, "#history li:first-child [data-rollback]").await;
    b.wait_for_text("#history-status", "已回滚").await;
    assert_eq!(std::fs::read_to_string(&rules_path).unwrap(), after_edit);
    assert!(!server
        .push(&text_push("退款", 7002))
        .await
        .contains("退款请联系客服"));
    assert_eq!(
        git(&server.scratch.dir, &["rev-list", "--count", "HEAD"]).trim(),
        "4"
    );
    assert_no_page_errors(&b).await;
}

#[tokio::test]
async fn drafts_that_fail_check_or_a_rule_test_cannot_be_applied() {
    let server = single(shipped_scratch("editor-refused"), Some(ADMIN_TOKEN));
    let rules_path = server.rules_path();
    let price = server.scratch.path("templates/price.hbs");
    let (rules_before, price_before) = (
        std::fs::read_to_string(&rules_path).unwrap(),
        std::fs::read_to_string(&price).unwrap(),
    );
    let b = Browser::start().await;
    signed_in(&b, &server, ADMIN_TOKEN).await;

    // A template that does not compile: the error is shown at the field, and the draft
    // cannot be applied.
    click(&b, "[data-edit-rule='price']").await;
    b.wait_for("form#edit-rule textarea[name='template']").await;
    fill(
        &b,
        "form#edit-rule textarea[name='template']",
        "本周价格 {{#each}}",
    )
    .await;
    click(&b, "#edit-save").await;
    b.wait_for(".draft-error").await;
    b.wait_for_text(
        "form#edit-rule [data-field='reply'] .field-error",
        "price.hbs",
    )
    .await;
    assert!(b
        .find("#draft-apply")
        .await
        .attr("disabled")
        .await
        .unwrap()
        .is_some());
    b.screenshot("editor-error").await;

    // A template that compiles but fails the rule test `the price list`.
    fill(
        &b,
        "form#edit-rule textarea[name='template']",
        "价格表更新中",
    )
    .await;
    click(&b, "#edit-save").await;
    b.wait_for("#draft-tests .failed-case[data-case='the price list']")
        .await;
    assert!(b
        .find("#draft-apply")
        .await
        .attr("disabled")
        .await
        .unwrap()
        .is_some());

    // The API refuses to apply it too.
    let made = api(
        &server,
        "POST",
        "/api/drafts",
        Some(ADMIN_TOKEN),
        Some(json!({
            "base": source_digest(&server, ADMIN_TOKEN).await,
            "changes": [{"op": "set_template", "file": "price", "text": "价格表更新中"}],
        })),
    )
    .await;
    assert_eq!(made.0, 200, "{}", made.1);
    assert_eq!(made.1["good"], false);
    assert_eq!(made.1["tests"]["failed"][0]["name"], "the price list");
    let id = made.1["draft"].as_str().unwrap().to_owned();
    let applied = api(
        &server,
        "POST",
        &format!("/api/drafts/{id}/apply"),
        Some(ADMIN_TOKEN),
        Some(json!({})),
    )
    .await;
    assert_eq!(applied.0, 422, "{}", applied.1);

    // Nothing was written.
    assert_eq!(std::fs::read_to_string(&rules_path).unwrap(), rules_before);
    assert_eq!(std::fs::read_to_string(&price).unwrap(), price_before);
    assert!(server
        .push(&text_push("价格", 7101))
        .await
        .contains("本周价格"));

    // The case takes the new reply as its expectation: the tests file changes with the
    // template, the draft passes, and it applies.
    click(&b, "[data-take-expectation='the price list']").await;
    b.wait_for_text("#draft-diff", "tests.yaml").await;
    apply(&b).await;
    let tests = std::fs::read_to_string(server.scratch.path("tests.yaml")).unwrap();
    assert!(
        tests.contains("    rule: \"price\"\n    reply_contains: \"价格表更新中\"\n"),
        "{tests}"
    );
    assert!(tests.contains("  - name: like menu\n"), "{tests}");
    assert!(server
        .push(&text_push("价格", 7102))
        .await
        .contains("价格表更新中"));
    assert_no_page_errors(&b).await;
}

#[tokio::test]
async fn a_hand_edit_after_the_draft_began_is_a_conflict_that_writes_nothing() {
    let server = single(shipped_scratch("editor-conflict"), Some(ADMIN_TOKEN));
    let rules_path = server.rules_path();
    let b = Browser::start().await;
    signed_in(&b, &server, ADMIN_TOKEN).await;
    click(&b, "[data-edit-rule='menu-like']").await;
    fill(&b, "form#edit-rule textarea[name='text']", "赞！").await;
    click(&b, "#edit-save").await;
    b.wait_for_text("#draft-diff", "赞！").await;

    // Someone edits the file by hand meanwhile.
    let hand = std::fs::read_to_string(&rules_path)
        .unwrap()
        .replace("该功能即将上线，敬请期待。", "该功能下周上线。");
    std::fs::write(&rules_path, &hand).unwrap();
    applicable(&b).await;
    click(&b, "#draft-apply").await;
    b.wait_for_text("#conflict-diff", "该功能下周上线。").await;
    assert_eq!(std::fs::read_to_string(&rules_path).unwrap(), hand);
    // Starting again from the files as they are, the change applies.
    click(&b, "#start-again").await;
    click(&b, "[data-edit-rule='menu-like']").await;
    fill(&b, "form#edit-rule textarea[name='text']", "赞！").await;
    click(&b, "#edit-save").await;
    apply(&b).await;
    let now = std::fs::read_to_string(&rules_path).unwrap();
    assert!(
        now.contains("该功能下周上线。") && now.contains("reply: { text: 赞！ }"),
        "{now}"
    );

    // The history directory (not a git work tree) recorded it; a rollback restores the hand
    // edit byte for byte.
    let history = api(&server, "GET", "/api/history", Some(ADMIN_TOKEN), None).await;
    assert_eq!(history.0, 200);
    let id = history.1["changes"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(history.1["changes"][0]["editor"], "admin");
    let base = source_digest(&server, ADMIN_TOKEN).await;
    let back = api(
        &server,
        "POST",
        &format!("/api/history/{id}/rollback"),
        Some(ADMIN_TOKEN),
        Some(json!({"base": base})),
    )
    .await;
    assert_eq!(back.0, 200, "{}", back.1);
    assert_eq!(std::fs::read_to_string(&rules_path).unwrap(), hand);
    assert!(server.scratch.path(".wxrules-history").is_dir());
}

#[tokio::test]
async fn viewers_and_anonymous_visitors_cannot_write() {
    let scratch = shipped_scratch("editor-viewer");
    scratch.write(
        "wxrules.yaml",
        "accounts:\n  - name: shop\n    rules: rules.yaml\n    templates: templates\n    token_env: WXRULES_TOKEN\neditors:\n  - name: alice\n    token_env: EDITOR_TEST_ALICE\n    role: editor\n  - name: victor\n    token_env: EDITOR_TEST_VICTOR\n    role: viewer\n",
    );
    let server = Server::launch_with(
        scratch,
        &["--config", "wxrules.yaml"],
        &[
            ("EDITOR_TEST_ALICE", ALICE_TOKEN),
            ("EDITOR_TEST_VICTOR", VICTOR_TOKEN),
        ],
    );
    let rules_before = std::fs::read_to_string(server.rules_path()).unwrap();
    // The viewer sees the rules but no edit controls.
    let b = Browser::start().await;
    signed_in(&b, &server, VICTOR_TOKEN).await;
    b.wait_for_text("#who", "victor").await;
    b.wait_for_text("#read-only", "只读").await;
    assert_eq!(b.count("[data-edit-rule]").await, 0);
    assert!(!b.find("#add-rule").await.is_displayed().await.unwrap());
    // Nor does the API let them write.
    let base = source_digest(&server, VICTOR_TOKEN).await;
    let change = json!({"base": base, "changes": [{"op": "set_reply", "rule": "menu-like", "reply": {"text": "x"}}]});
    let viewer = api(
        &server,
        "POST",
        "/api/drafts?account=shop",
        Some(VICTOR_TOKEN),
        Some(change.clone()),
    )
    .await;
    assert_eq!(viewer.0, 403, "{}", viewer.1);
    let anonymous = api(
        &server,
        "POST",
        "/api/drafts?account=shop",
        None,
        Some(change.clone()),
    )
    .await;
    assert_eq!(anonymous.0, 401, "{}", anonymous.1);
    let wrong = api(
        &server,
        "POST",
        "/api/drafts?account=shop",
        Some("not-the-token-of-anyone"),
        Some(change.clone()),
    )
    .await;
    assert_eq!(wrong.0, 401);
    // The editor may; the viewer cannot apply the editor's draft.
    let draft = api(
        &server,
        "POST",
        "/api/drafts?account=shop",
        Some(ALICE_TOKEN),
        Some(change),
    )
    .await;
    assert_eq!(draft.0, 200, "{}", draft.1);
    let id = draft.1["draft"].as_str().unwrap().to_owned();
    let stolen = api(
        &server,
        "POST",
        &format!("/api/drafts/{id}/apply"),
        Some(VICTOR_TOKEN),
        Some(json!({})),
    )
    .await;
    assert_eq!(stolen.0, 403);
    let rollback = api(
        &server,
        "POST",
        "/api/history/anything/rollback?account=shop",
        Some(VICTOR_TOKEN),
        Some(json!({"base": base})),
    )
    .await;
    assert_eq!(rollback.0, 403);
    assert_eq!(
        std::fs::read_to_string(server.rules_path()).unwrap(),
        rules_before
    );
    assert_no_page_errors(&b).await;
    drop(b);

    // Without any editor the page is read-only, and writes are refused.
    let open = single(shipped_scratch("editor-anonymous"), None);
    let b = Browser::start().await;
    b.client.goto(&open.url("/")).await.unwrap();
    b.wait_for("#rules tbody tr[data-rule='price']").await;
    b.wait_for_text("#read-only", "只读").await;
    assert_eq!(b.count("[data-edit-rule]").await, 0);
    let base = source_digest(&open, "").await;
    let refused = api(
        &open,
        "POST",
        "/api/drafts",
        None,
        Some(json!({"base": base, "changes": []})),
    )
    .await;
    assert_eq!(refused.0, 403, "{}", refused.1);
}

/// The digest `/api/source` gives: a draft's `base`.
async fn source_digest(server: &Server, token: &str) -> String {
    let account = if server
        .rules_path()
        .parent()
        .unwrap()
        .join("wxrules.yaml")
        .exists()
    {
        "?account=shop"
    } else {
        ""
    };
    let (status, body) = api(
        server,
        "GET",
        &format!("/api/source{account}"),
        Some(token).filter(|t| !t.is_empty()),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["digest"].as_str().unwrap().to_owned()
}

/// A JSON request to the admin port: status and body.
async fn api(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client.request(method.parse().unwrap(), server.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let response = req.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}
