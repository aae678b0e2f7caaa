//! The YAML shape of `menu.yaml`, as written by people: the only types of the menu that
//! derive `Deserialize` from YAML, and the source of its JSON Schema. The names are
//! WeChat's own (`button`, `sub_button`, `type`, `matchrule`), so the API's documentation
//! reads as the file's. `load` checks what the types cannot say (WeChat's limits).

use schemars::JsonSchema;
use serde::Deserialize;

use crate::rules::schema::Scalar;

/// A wxrules custom menu file (`rules/menu.yaml`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "wxrules custom menu file")]
#[schemars(rename = "MenuFile")]
pub(crate) struct RawMenu {
    /// The default menu: 1 to 3 buttons, each an action or up to 5 sub-buttons.
    #[schemars(length(min = 1, max = 3))]
    pub(crate) button: Vec<RawButton>,
    /// Conditional menus (个性化菜单): shown instead of the default one to the users their
    /// `matchrule` selects.
    #[serde(default)]
    pub(crate) conditional: Vec<RawConditional>,
}

/// One conditional menu.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ConditionalMenu")]
pub(crate) struct RawConditional {
    /// Who sees it: at least one of `tag_id`, `client_platform_type`.
    pub(crate) matchrule: RawMatchRule,
    /// Its buttons, as the default menu's.
    #[schemars(length(min = 1, max = 3))]
    pub(crate) button: Vec<RawButton>,
}

/// Who sees a conditional menu. WeChat no longer takes sex, region or language (65320).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "MatchRule")]
pub(crate) struct RawMatchRule {
    /// A user tag's id (用户标签).
    pub(crate) tag_id: Option<Scalar>,
    /// The phone's system: 1 iOS, 2 Android, 3 others.
    pub(crate) client_platform_type: Option<Scalar>,
}

/// A button: a name and either an action (`type` and its fields) or `sub_button`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Button")]
pub(crate) struct RawButton {
    /// The title: at most 16 bytes on the bar (5 Chinese characters), 60 in a sub-menu.
    pub(crate) name: Scalar,
    /// What a tap does: click, view, miniprogram, scancode_push, scancode_waitmsg,
    /// pic_sysphoto, pic_photo_or_album, pic_weixin, location_select, media_id,
    /// view_limited, article_id, article_view_limited. Not with `sub_button`.
    #[serde(rename = "type")]
    #[schemars(with = "Option<super::Kind>")]
    pub(crate) kind: Option<Scalar>,
    /// The `EventKey` pushed (click, scancode_*, pic_*, location_select): at most 128 bytes.
    pub(crate) key: Option<Scalar>,
    /// The page opened (view; miniprogram's fallback): at most 1024 bytes.
    pub(crate) url: Option<Scalar>,
    /// A permanent material's id (media_id, view_limited).
    pub(crate) media_id: Option<Scalar>,
    /// The mini program's AppID (miniprogram).
    pub(crate) appid: Option<Scalar>,
    /// The mini program's page (miniprogram).
    pub(crate) pagepath: Option<Scalar>,
    /// A published article's id (article_id, article_view_limited).
    pub(crate) article_id: Option<Scalar>,
    /// A sub-menu: 1 to 5 buttons with actions. Not with `type`.
    #[schemars(length(min = 1, max = 5))]
    pub(crate) sub_button: Option<Vec<RawButton>>,
}

/// The JSON Schema of `menu.yaml`, generated from these types, as pretty JSON.
pub(crate) fn json_schema() -> String {
    let schema = schemars::schema_for!(RawMenu);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
