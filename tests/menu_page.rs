//! The page's menu view in a headless Chromium: the account's `menu.yaml` drawn as a phone
//! shows it (the bar, each sub-menu above its button, one phone per conditional menu), each
//! button with the rule a tap reaches and that rule's hits from real pushes.
#![allow(clippy::unwrap_used)]

#[path = "common/browser.rs"]
mod browser;
mod common;

use browser::{click_push, Browser, Server};
use common::{root, Scratch};

#[tokio::test]
async fn the_menu_shows_as_a_phone_with_each_buttons_rule_and_hits() {
    let scratch = Scratch::new("menu-page");
    let data = root().join("tests/data/menu");
    for file in ["rules.yaml", "menu.yaml"] {
        scratch.write(file, &std::fs::read_to_string(data.join(file)).unwrap());
    }
    let server = Server::launch(
        scratch,
        &["--rules", "rules.yaml", "--templates", "templates"],
        None,
    );
    // A tap on 今日歌曲, as WeChat pushes it.
    assert!(server
        .push(&click_push("V1001_TODAY_MUSIC"))
        .await
        .contains("今天的歌"));

    let browser = Browser::start().await;
    let b = &browser;
    b.client.goto(&server.url("/#menu")).await.unwrap();
    b.wait_for(".menu-phone [data-menu-button]").await;
    // The default menu and the conditional one, each a phone.
    assert_eq!(b.count(".menu-phone").await, 2);
    assert_eq!(b.count(".menu-phone[data-menu='0'] .menu-top").await, 3);
    assert_eq!(b.count(".menu-phone[data-menu='0'] .menu-sub").await, 10);
    // A button with its rule and the rule's hits.
    let music = ".menu-phone[data-menu='0'] .menu-top[data-menu-button='今日歌曲']";
    assert_eq!(
        b.text(&format!("{music} [data-menu-rule='today-music']"))
            .await,
        "today-music · 1 次"
    );
    // A scan button's rule, not tapped yet; a scan button no rule answers; a link.
    let scan = ".menu-sub[data-menu-button='扫码带提示'] [data-menu-rule='scan']";
    assert_eq!(b.text(scan).await, "scan · 0 次");
    assert_eq!(
        b.text(".menu-sub[data-menu-button='扫码推事件'] .menu-rule")
            .await,
        "没有规则回复"
    );
    assert_eq!(
        b.text(".menu-sub[data-menu-button='搜索'] .menu-rule")
            .await,
        "打开 www.soso.com"
    );
    // The conditional menu says who sees it, and its button's rule.
    assert_eq!(
        b.text(".menu-phone[data-menu='1'] figcaption").await,
        "个性化菜单：标签 2，Android"
    );
    assert_eq!(
        b.text(".menu-phone[data-menu='1'] [data-menu-rule='android-only']")
            .await,
        "android-only · 0 次"
    );
    b.screenshot("dashboard-menu").await;
    // In English too.
    b.find("#lang").await.click().await.unwrap();
    b.wait_for_text(scan, "scan · 0 hits").await;
    assert_eq!(
        b.text(".menu-phone[data-menu='0'] figcaption").await,
        "Default menu"
    );
    let errors = b.page_errors().await;
    assert!(errors.is_empty(), "{errors:?}");
}

#[tokio::test]
async fn an_account_without_a_menu_says_so() {
    let scratch = Scratch::new("menu-page-none");
    scratch.write(
        "rules.yaml",
        &std::fs::read_to_string(root().join("tests/data/menu/rules.yaml")).unwrap(),
    );
    let server = Server::launch(
        scratch,
        &["--rules", "rules.yaml", "--templates", "templates"],
        None,
    );
    let browser = Browser::start().await;
    let b = &browser;
    b.client.goto(&server.url("/#menu")).await.unwrap();
    b.wait_for("#menu-phones p").await;
    assert_eq!(
        b.text("#menu-phones p").await,
        "这个公众号没有菜单文件（menu.yaml）。"
    );
    assert_eq!(b.count(".menu-phone").await, 0);
}
