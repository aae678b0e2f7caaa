//! Downloading media: temporary media (`media/get`), permanent material
//! (`material/get_material`), and the download link either gives for a video. Each answer
//! is read up to the caller's limit (WeChat's size for the kind) and within
//! `DOWNLOAD_TIMEOUT`; no redirect is followed. What a file is for is the caller's business
//! (`wxrules import --download-media`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{describe, outcome, read_capped, Api, ApiError};

/// How long one download may take, the answer's body included: a video of 10 MB at 1 Mbit/s
/// takes some 80 s.
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// A media file as WeChat gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub bytes: Vec<u8>,
    /// The answer's `Content-Type`, without parameters, in lower case (empty without one).
    pub content_type: String,
    /// The file name its `Content-Disposition` gives, if any.
    pub filename: Option<String>,
    /// A permanent video's title and description.
    pub video: Option<(String, String)>,
}

/// One answer of a download call: the file, or (for a video) where to fetch it.
enum Answer {
    File(Media),
    Json(Value),
}

impl Api {
    /// Temporary media `media_id` (`GET /cgi-bin/media/get`), `limit` bytes at most: the
    /// file, or for a video the file its `video_url` names. A token WeChat says is no good
    /// is refreshed once; WeChat's errors (40007: no such temporary media) are
    /// `ApiError::Wechat`.
    pub async fn media_get(&self, media_id: &str, limit: usize) -> Result<Media, ApiError> {
        let url = format!("{}/cgi-bin/media/get", self.base);
        let url = url.as_str();
        let answer = self
            .authorized(move |token: Arc<str>| async move {
                let request = self
                    .http
                    .get(url)
                    .query(&[("access_token", &*token), ("media_id", media_id)]);
                self.download_call("media_get", request, limit).await
            })
            .await?;
        match answer {
            Answer::File(file) => Ok(file),
            Answer::Json(json) => match json.get("video_url").and_then(Value::as_str) {
                Some(link) => self.download(link, limit).await,
                None => Err(ApiError::Answer("neither a file nor a video_url".into())),
            },
        }
    }

    /// Permanent material `media_id` (`POST /cgi-bin/material/get_material`), `limit` bytes
    /// at most: the file of an image or a voice, or for a video (`{"title", "description",
    /// "down_url"}`) the file `down_url` names, with its title and description. A news
    /// material is no file: refused.
    pub async fn material_get(&self, media_id: &str, limit: usize) -> Result<Media, ApiError> {
        let url = format!("{}/cgi-bin/material/get_material", self.base);
        let url = url.as_str();
        let body = serde_json::json!({ "media_id": media_id });
        let body = &body;
        let answer = self
            .authorized(move |token: Arc<str>| async move {
                let request = self
                    .http
                    .post(url)
                    .query(&[("access_token", &*token)])
                    .json(body);
                self.download_call("get_material", request, limit).await
            })
            .await?;
        let json = match answer {
            Answer::File(file) => return Ok(file),
            Answer::Json(json) => json,
        };
        if json.get("news_item").is_some() {
            return Err(ApiError::Answer("a news material, not a file".into()));
        }
        let Some(link) = json.get("down_url").and_then(Value::as_str) else {
            return Err(ApiError::Answer("neither a file nor a down_url".into()));
        };
        let text = |key: &str| {
            crate::rules::excerpt::cut(json.get(key).and_then(Value::as_str).unwrap_or(""), 200)
        };
        let mut file = self.download(link, limit).await?;
        file.video = Some((text("title"), text("description")));
        Ok(file)
    }

    /// The file at `link`, a download link WeChat gave (a video's `video_url` or
    /// `down_url`, or the link the console's export gives for a video): fetched without
    /// credentials, `limit` bytes at most. Only `http` and `https` links.
    pub async fn download(&self, link: &str, limit: usize) -> Result<Media, ApiError> {
        let url = reqwest::Url::parse(link)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https"))
            .ok_or_else(|| ApiError::Answer("the download link is not an http(s) URL".into()))?;
        match self
            .download_call("media_download", self.http.get(url), limit)
            .await?
        {
            Answer::File(file) => Ok(file),
            // A link that answers WeChat's JSON: its errcode, or what it is not.
            Answer::Json(_) => Err(ApiError::Answer(
                "the download link gave JSON, not a file".into(),
            )),
        }
    }

    /// Sends `request` and reads its answer, `limit` bytes at most: WeChat's JSON (a
    /// non-zero `errcode` an error), or a file. Counted under `label`.
    async fn download_call(
        &self,
        label: &str,
        request: reqwest::RequestBuilder,
        limit: usize,
    ) -> Result<Answer, ApiError> {
        let result = self.fetch(request, limit).await;
        self.metrics.observe_api_call(label, outcome(&result));
        result
    }

    async fn fetch(
        &self,
        request: reqwest::RequestBuilder,
        limit: usize,
    ) -> Result<Answer, ApiError> {
        let response = request
            .timeout(DOWNLOAD_TIMEOUT)
            .send()
            .await
            .map_err(|e| ApiError::Network(describe(&e)))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(ApiError::Redirected(status.as_u16()));
        }
        if !status.is_success() {
            return Err(ApiError::Status(status.as_u16()));
        }
        let header = |name: reqwest::header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.split(';').next().map(|t| t.trim().to_ascii_lowercase()))
            .unwrap_or_default();
        let filename = header(reqwest::header::CONTENT_DISPOSITION).and_then(|v| filename(&v));
        let bytes = read_capped(response, limit).await?;
        // WeChat answers its errors (and a video's link) as JSON, sometimes as `text/plain`;
        // no file WeChat keeps starts with `{`.
        let looks_json = content_type.contains("json")
            || content_type.starts_with("text/")
            || bytes.trim_ascii_start().first() == Some(&b'{');
        if looks_json {
            if let Ok(json @ Value::Object(_)) = serde_json::from_slice::<Value>(&bytes) {
                return match json.get("errcode").and_then(Value::as_i64) {
                    Some(errcode) if errcode != 0 => Err(ApiError::Wechat {
                        errcode,
                        errmsg: crate::rules::excerpt::cut(
                            json.get("errmsg").and_then(Value::as_str).unwrap_or(""),
                            200,
                        ),
                    }),
                    _ => Ok(Answer::Json(json)),
                };
            }
        }
        Ok(Answer::File(Media {
            bytes,
            content_type,
            filename,
            video: None,
        }))
    }
}

/// The file name of a `Content-Disposition` header (`attachment; filename="MEDIA_ID.jpg"`).
fn filename(disposition: &str) -> Option<String> {
    disposition.split(';').find_map(|part| {
        let (key, value) = part.split_once('=')?;
        (key.trim().eq_ignore_ascii_case("filename"))
            .then(|| value.trim().trim_matches('"').to_owned())
            .filter(|name| !name.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_name_comes_from_the_content_disposition() {
        assert_eq!(
            filename("attachment; filename=\"MEDIA_ID.jpg\"").as_deref(),
            Some("MEDIA_ID.jpg")
        );
        assert_eq!(
            filename("attachment; FILENAME=a.amr").as_deref(),
            Some("a.amr")
        );
        assert_eq!(filename("attachment"), None);
        assert_eq!(filename("attachment; filename=\"\""), None);
    }
}
