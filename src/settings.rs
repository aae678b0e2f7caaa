//! Settings from the environment: the Token and, for safe mode, the AppID and
//! EncodingAESKey; for WeChat's API, the AppID and AppSecret. Validated once at start-up;
//! `Debug` never shows a secret.

use std::fmt;

use crate::crypto::{Cipher, KeyError};

/// Why the environment does not make valid settings. Names the variable, never its value.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {0} is empty")]
    Empty(&'static str),
    #[error("WXRULES_AES_KEY is set but WXRULES_APPID is not: safe mode needs both")]
    AppIdMissing,
    // The key's error is part of this message, not its source: a chain printer (`{:#}`)
    // would say it twice.
    #[error("WXRULES_AES_KEY: {0}")]
    Key(KeyError),
    #[error("WXRULES_APPSECRET is set but WXRULES_APPID is not: the API needs both")]
    ApiAppIdMissing,
}

/// The API credentials from `WXRULES_APPID` and `WXRULES_APPSECRET`: `None` without an
/// AppSecret (the server then answers passively only, and says so).
pub fn api_credentials() -> Result<Option<crate::wechat_api::Credentials>, SettingsError> {
    let var = |name: &'static str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (var("WXRULES_APPID"), var("WXRULES_APPSECRET")) {
        (Some(appid), Some(secret)) => {
            Ok(Some(crate::wechat_api::Credentials::new(&appid, &secret)))
        }
        (None, Some(_)) => Err(SettingsError::ApiAppIdMissing),
        (_, None) => Ok(None),
    }
}

/// The account's secrets.
pub struct Secrets {
    token: String,
    cipher: Option<Cipher>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("token", &"<redacted>")
            .field("cipher", &self.cipher)
            .finish()
    }
}

impl Secrets {
    /// Builds the secrets from values; `aes` is (EncodingAESKey, AppID).
    pub fn new(token: &str, aes: Option<(&str, &str)>) -> Result<Secrets, SettingsError> {
        if token.is_empty() {
            return Err(SettingsError::Empty("WXRULES_TOKEN"));
        }
        let cipher = match aes {
            None => None,
            Some((key, app_id)) => {
                if app_id.is_empty() {
                    return Err(SettingsError::AppIdMissing);
                }
                Some(Cipher::new(key, app_id).map_err(SettingsError::Key)?)
            }
        };
        Ok(Secrets {
            token: token.to_owned(),
            cipher,
        })
    }

    /// Builds the secrets from a token (not empty) and a safe-mode cipher already checked.
    pub(crate) fn from_parts(token: &str, cipher: Option<Cipher>) -> Secrets {
        Secrets {
            token: token.to_owned(),
            cipher,
        }
    }

    /// Reads `WXRULES_TOKEN` (required), `WXRULES_AES_KEY` and `WXRULES_APPID` (both for
    /// safe mode).
    pub fn from_env() -> Result<Secrets, SettingsError> {
        let var = |name: &'static str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let token = var("WXRULES_TOKEN").ok_or(SettingsError::Missing("WXRULES_TOKEN"))?;
        let aes = match (var("WXRULES_AES_KEY"), var("WXRULES_APPID")) {
            (Some(key), Some(app_id)) => Some((key, app_id)),
            (Some(_), None) => return Err(SettingsError::AppIdMissing),
            (None, _) => None,
        };
        Secrets::new(&token, aes.as_ref().map(|(k, a)| (k.as_str(), a.as_str())))
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// The safe-mode cipher, when an EncodingAESKey is configured.
    pub fn cipher(&self) -> Option<&Cipher> {
        self.cipher.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_token() {
        let s = Secrets::new("s3cret-token", None).unwrap();
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn empty_token_and_key_without_app_id_are_refused() {
        assert_eq!(
            Secrets::new("", None).unwrap_err().to_string(),
            "environment variable WXRULES_TOKEN is empty"
        );
        let key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
        assert_eq!(
            Secrets::new("t", Some((key, ""))).unwrap_err().to_string(),
            "WXRULES_AES_KEY is set but WXRULES_APPID is not: safe mode needs both"
        );
    }
}
