//! The custom menu's calls (`menu/get`, `menu/create`, `menu/addconditional`,
//! `menu/delete`) and permanent material (`material/add_material`), as JSON in and out:
//! what a menu or a file means is the caller's business (`crate::menu`, the rules' media).

use std::sync::Arc;

use serde_json::Value;

use super::{outcome, Api, ApiError, TOKEN_INVALID};

/// WeChat's "menu no exist": `menu/get` of an account that has none.
const NO_MENU: i64 = 46003;

/// A file to upload as permanent material.
#[derive(Debug, Clone)]
pub struct Material<'a> {
    /// `image`, `voice` or `video`.
    pub kind: &'a str,
    /// The file's name as WeChat sees it (its extension tells the format).
    pub filename: &'a str,
    pub bytes: &'a [u8],
    /// A video's title and introduction.
    pub video: Option<(&'a str, &'a str)>,
}

impl Api {
    /// The live menu: `menu/get`'s JSON, or `None` when the account has no menu.
    pub async fn menu_get(&self) -> Result<Option<Value>, ApiError> {
        let url = format!("{}/cgi-bin/menu/get", self.base);
        let url = url.as_str();
        let result = self
            .authorized(move |token: Arc<str>| async move {
                self.json_call(
                    "menu_get",
                    self.http.get(url).query(&[("access_token", &*token)]),
                )
                .await
            })
            .await;
        match result {
            Err(ApiError::Wechat { errcode, .. }) if errcode == NO_MENU => Ok(None),
            other => other.map(Some),
        }
    }

    /// Creates the default menu (`menu/create`) from `body` (`{"button": […]}`).
    pub async fn menu_create(&self, body: &Value) -> Result<(), ApiError> {
        self.post_json("menu/create", "menu_create", body)
            .await
            .map(drop)
    }

    /// Adds a conditional menu (`menu/addconditional`); its `menuid`.
    pub async fn menu_addconditional(&self, body: &Value) -> Result<String, ApiError> {
        let answer = self
            .post_json("menu/addconditional", "menu_addconditional", body)
            .await?;
        match answer.get("menuid") {
            Some(Value::String(id)) => Ok(id.clone()),
            Some(Value::Number(id)) => Ok(id.to_string()),
            _ => Err(ApiError::Answer("no menuid in the answer".into())),
        }
    }

    /// Deletes the menu, conditional menus included (`menu/delete`).
    pub async fn menu_delete(&self) -> Result<(), ApiError> {
        let url = format!("{}/cgi-bin/menu/delete", self.base);
        let url = url.as_str();
        self.authorized(move |token: Arc<str>| async move {
            self.json_call(
                "menu_delete",
                self.http.get(url).query(&[("access_token", &*token)]),
            )
            .await
        })
        .await
        .map(drop)
    }

    /// Uploads `material` as permanent material (`material/add_material`, multipart);
    /// its `media_id`.
    pub async fn add_material(&self, material: &Material<'_>) -> Result<String, ApiError> {
        let url = format!("{}/cgi-bin/material/add_material", self.base);
        let url = url.as_str();
        let (content_type, body) = multipart(material);
        let (content_type, body) = (content_type.as_str(), &body);
        let answer = self
            .authorized(move |token: Arc<str>| async move {
                self.json_call(
                    "add_material",
                    self.http
                        .post(url)
                        .query(&[("access_token", &*token), ("type", material.kind)])
                        .header(reqwest::header::CONTENT_TYPE, content_type)
                        .body(body.clone()),
                )
                .await
            })
            .await?;
        match answer.get("media_id") {
            Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
            _ => Err(ApiError::Answer("no media_id in the answer".into())),
        }
    }

    async fn post_json(&self, path: &str, label: &str, body: &Value) -> Result<Value, ApiError> {
        let url = format!("{}/cgi-bin/{path}", self.base);
        let url = url.as_str();
        self.authorized(move |token: Arc<str>| async move {
            self.json_call(
                label,
                self.http
                    .post(url)
                    .query(&[("access_token", &*token)])
                    .json(body),
            )
            .await
        })
        .await
    }

    /// `call` with the access token; an answer that says the token is no good refreshes
    /// it and calls once more.
    pub(super) async fn authorized<T, F, Fut>(&self, call: F) -> Result<T, ApiError>
    where
        F: Fn(Arc<str>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let token: Arc<str> = self.access_token().await?;
        match call(Arc::clone(&token)).await {
            Err(ApiError::Wechat { errcode, .. }) if TOKEN_INVALID.contains(&errcode) => {
                tracing::warn!(
                    event = "token_rejected",
                    account = self.metrics.account(),
                    errcode,
                    "refreshing the access token"
                );
                let fresh = self.refresh_token(Some(&token)).await?;
                call(fresh).await
            }
            other => other,
        }
    }

    /// Sends `request`, reads its JSON answer and turns a non-zero `errcode` into an error;
    /// counted under `label`.
    pub(super) async fn json_call(
        &self,
        label: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, ApiError> {
        let result = self.call::<Value>(request).await.and_then(|value| {
            match value.get("errcode").and_then(Value::as_i64) {
                Some(errcode) if errcode != 0 => Err(ApiError::Wechat {
                    errcode,
                    errmsg: crate::rules::excerpt::cut(
                        value.get("errmsg").and_then(Value::as_str).unwrap_or(""),
                        200,
                    ),
                }),
                _ => Ok(value),
            }
        });
        self.metrics.observe_api_call(label, outcome(&result));
        result
    }
}

/// The form WeChat documents: the file as `media`, and for a video `description`
/// (`{"title", "introduction"}`). Written by hand: one part or two, no streaming needed
/// for files of 10 MB at most.
fn multipart(material: &Material<'_>) -> (String, Vec<u8>) {
    let boundary = format!("wxrules-{:016x}", rand::random::<u64>());
    let mut body = Vec::with_capacity(material.bytes.len() + 512);
    // Quotes and line breaks would end the header early; a file name never needs them.
    let filename: String = material
        .filename
        .chars()
        .map(|c| if c == '"' || c.is_control() { '_' } else { c })
        .collect();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"media\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(material.bytes);
    body.extend_from_slice(b"\r\n");
    if let Some((title, introduction)) = material.video {
        let description = serde_json::json!({"title": title, "introduction": introduction});
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"description\"\r\n\r\n{description}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}
