//! The live menu from WeChat's `menu/get` answer (`{"menu": {"button": […]},
//! "conditionalmenu": [{"button": […], "matchrule": {…}, "menuid": …}]}`), as a `Menu` to
//! compare with the file or to write as YAML. Lenient where WeChat is loose (an empty
//! `sub_button: []` on every action, numbers or strings in `matchrule`), strict on types:
//! a type this file does not know (the MP console's `news`, `text`, …) is an error.

use serde_json::Value;

use super::{Button, Conditional, Kind, MatchRule, Menu};
use crate::rules::excerpt;

/// The menu in `answer` (`menu/get`'s JSON), or what is wrong with it.
pub fn from_wechat(answer: &Value) -> Result<Menu, String> {
    let button = match answer.get("menu") {
        Some(menu) => buttons(menu.get("button"))?,
        None => Vec::new(),
    };
    let conditional = match answer.get("conditionalmenu") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(menus)) => menus
            .iter()
            .map(|m| {
                Ok(Conditional {
                    matchrule: matchrule(m.get("matchrule")),
                    button: buttons(m.get("button"))?,
                })
            })
            .collect::<Result<_, String>>()?,
        Some(_) => return Err("`conditionalmenu` is not a list".into()),
    };
    Ok(Menu {
        button,
        conditional,
    })
}

fn buttons(list: Option<&Value>) -> Result<Vec<Button>, String> {
    match list {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(button).collect(),
        Some(_) => Err("`button` is not a list".into()),
    }
}

/// A text field; WeChat writes absent ones as missing, sometimes as "".
fn text(value: &Value, field: &str) -> Option<String> {
    match value.get(field)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn button(value: &Value) -> Result<Button, String> {
    let kind = match text(value, "type") {
        None => None,
        Some(name) => Some(Kind::parse(&name).ok_or_else(|| {
            format!(
                "a button of type `{}`, which menu.yaml cannot hold (made in the MP console?)",
                excerpt::excerpt(&name)
            )
        })?),
    };
    Ok(Button {
        name: text(value, "name").unwrap_or_default(),
        kind,
        key: text(value, "key"),
        url: text(value, "url"),
        media_id: text(value, "media_id"),
        appid: text(value, "appid"),
        pagepath: text(value, "pagepath"),
        article_id: text(value, "article_id"),
        sub_button: buttons(value.get("sub_button"))?,
    })
}

fn matchrule(value: Option<&Value>) -> MatchRule {
    let Some(value) = value else {
        return MatchRule::default();
    };
    MatchRule {
        tag_id: text(value, "tag_id").or_else(|| text(value, "group_id")),
        client_platform_type: text(value, "client_platform_type"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const FILE: &str = "\
button:
  - { name: 今日歌曲, type: click, key: V1001_TODAY_MUSIC }
  - name: 菜单
    sub_button:
      - { name: 搜索, type: view, url: 'http://www.soso.com/' }
      - { name: wxa, type: miniprogram, url: 'http://mp.weixin.qq.com', appid: wx286b93c14bbf93aa, pagepath: pages/lunar/index }
      - { name: 扫码, type: scancode_push, key: rselfmenu_0_1 }
conditional:
  - matchrule: { tag_id: 2, client_platform_type: 2 }
    button:
      - { name: 安卓, type: click, key: ANDROID }
";

    #[test]
    fn the_create_body_is_wechats_json() {
        let menu = super::super::load_str(FILE, Path::new("menu.yaml"))
            .unwrap()
            .menu;
        let body = menu.create_body();
        assert_eq!(body["button"][0]["type"], "click");
        assert_eq!(body["button"][0]["key"], "V1001_TODAY_MUSIC");
        assert!(body["button"][1].get("type").is_none());
        assert_eq!(
            body["button"][1]["sub_button"][1]["pagepath"],
            "pages/lunar/index"
        );
        let conditional = serde_json::to_value(&menu.conditional[0]).unwrap();
        assert_eq!(conditional["matchrule"]["tag_id"], "2");
        assert_eq!(conditional["button"][0]["key"], "ANDROID");
    }

    #[test]
    fn wechats_answer_reads_back_as_the_file() {
        let menu = super::super::load_str(FILE, Path::new("menu.yaml"))
            .unwrap()
            .menu;
        // As menu/get answers: an empty `sub_button` on each action, a menuid, numbers.
        let mut live = menu.create_body();
        for b in live["button"].as_array_mut().unwrap() {
            if b.get("sub_button").is_none() {
                b["sub_button"] = serde_json::json!([]);
            }
        }
        let answer = serde_json::json!({
            "menu": {"button": live["button"], "menuid": 100},
            "conditionalmenu": [{
                "button": [{"type": "click", "name": "安卓", "key": "ANDROID", "sub_button": []}],
                "matchrule": {"tag_id": 2, "client_platform_type": "2", "sex": ""},
                "menuid": 208379533
            }]
        });
        assert_eq!(from_wechat(&answer).unwrap(), menu);
        // And pull's YAML loads as the same menu.
        let yaml = menu.to_yaml();
        assert_eq!(
            super::super::load_str(&yaml, Path::new("m.yaml"))
                .unwrap()
                .menu,
            menu
        );
    }

    #[test]
    fn a_console_type_is_refused_by_name() {
        let answer = serde_json::json!({"menu": {"button": [{"type": "news", "name": "x"}]}});
        let e = from_wechat(&answer).unwrap_err();
        assert!(e.contains("`news`"), "{e}");
    }
}
