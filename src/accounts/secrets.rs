//! An account's secrets: where each comes from (an environment variable or a file, never the
//! config file itself), the one resolver that reads them, and `Secrets`, what a push needs
//! of them (the Token and the safe-mode cipher). The single account's sources are the
//! `WXRULES_*` variables. Errors name the variable or file, never a value; `Debug` redacts.

use std::fmt;
use std::path::PathBuf;

use crate::act::deliver::DeliverKey;
use crate::crypto::{Cipher, KeyError};
use crate::store::replay::BodyKey;
use crate::wechat_api::Credentials;

/// The largest secret file read.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Why `Secrets::new` refuses its values.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("environment variable {0} is empty")]
    Empty(&'static str),
    #[error("WXRULES_AES_KEY is set but WXRULES_APPID is not: safe mode needs both")]
    AppIdMissing,
    // The key's error is part of this message, not its source: a chain printer (`{:#}`)
    // would say it twice.
    #[error("WXRULES_AES_KEY: {0}")]
    Key(KeyError),
}

/// What a push needs of an account's secrets.
pub struct Secrets {
    token: String,
    cipher: Option<Cipher>,
    /// Keys plaintext bodies' hashes (`store::replay`), derived from the token once.
    body_key: BodyKey,
    /// Signs the account's delivery URLs (`act::deliver`), derived from the token once.
    deliver_key: DeliverKey,
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
            body_key: BodyKey::from_secret(token),
            deliver_key: DeliverKey::from_secret(token),
        })
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// The key of this account's delivery URLs (`act::deliver`).
    pub fn deliver_key(&self) -> &DeliverKey {
        &self.deliver_key
    }

    /// The key of this account's plaintext body hashes (`store::replay::BodyHash`).
    pub fn body_key(&self) -> BodyKey {
        self.body_key
    }

    /// The safe-mode cipher, when an EncodingAESKey is configured.
    pub fn cipher(&self) -> Option<&Cipher> {
        self.cipher.as_ref()
    }
}

/// Where each of an account's secrets comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretSources {
    pub token: Option<SecretSource>,
    pub appid: Option<SecretSource>,
    pub aes_key: Option<SecretSource>,
    pub appsecret: Option<SecretSource>,
}

/// An environment variable's name or a file's path; the value is read when the account is
/// built, and never shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

/// A secret as read: trimmed of surrounding whitespace (a file's last newline). An empty
/// value is no value, everywhere: an optional secret left empty is not used, and a
/// required one says it is empty.
enum Read {
    Value(String),
    Empty,
    Unset,
}

impl SecretSource {
    fn describe(&self) -> String {
        match self {
            SecretSource::Env(name) => format!("environment variable {name}"),
            SecretSource::File(path) => format!("file {}", path.display()),
        }
    }

    /// The variable's name, or `file PATH`: what a message about its value names.
    fn name(&self) -> String {
        match self {
            SecretSource::Env(name) => name.clone(),
            SecretSource::File(path) => format!("file {}", path.display()),
        }
    }

    /// The value, required: an error names the variable or file when it is not set or
    /// empty, never a value.
    pub fn read_value(&self) -> Result<String, String> {
        match self.read()? {
            Read::Value(value) => Ok(value),
            Read::Empty => Err(format!("{} is empty", self.describe())),
            Read::Unset => Err(format!("{} is not set", self.describe())),
        }
    }

    fn read(&self) -> Result<Read, String> {
        let value = match self {
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(value) => value,
                Err(std::env::VarError::NotPresent) => return Ok(Read::Unset),
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(format!("environment variable {name} is not UTF-8"))
                }
            },
            SecretSource::File(path) => crate::rules::read_text(path, MAX_SECRET_FILE)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        };
        let value = value.trim();
        Ok(if value.is_empty() {
            Read::Empty
        } else {
            Read::Value(value.to_owned())
        })
    }
}

/// An account's secrets, read: the request checks and, with an AppSecret, the API's.
pub struct ResolvedSecrets {
    pub secrets: Secrets,
    pub credentials: Option<Credentials>,
    /// A hash of the values, to tell on a reload whether they changed. Never shown.
    pub(crate) fingerprint: u64,
}

impl SecretSources {
    /// The single account's sources (no `--config`): `WXRULES_TOKEN`, `WXRULES_APPID`,
    /// `WXRULES_AES_KEY` and `WXRULES_APPSECRET`.
    pub fn environment() -> SecretSources {
        let env = |name: &str| Some(SecretSource::Env(name.to_owned()));
        SecretSources {
            token: env("WXRULES_TOKEN"),
            appid: env("WXRULES_APPID"),
            aes_key: env("WXRULES_AES_KEY"),
            appsecret: env("WXRULES_APPSECRET"),
        }
    }

    /// Reads every secret; the errors name the variables or files, never a value.
    pub fn resolve(&self) -> Result<ResolvedSecrets, String> {
        let token = match self.token.as_ref().map(SecretSource::read).transpose()? {
            Some(Read::Value(token)) => token,
            Some(Read::Empty) => return Err(format!("{} is empty", describe(&self.token))),
            Some(Read::Unset) => return Err(format!("{} is not set", describe(&self.token))),
            None => return Err("no token_env or token_file".into()),
        };
        let appid = value(&self.appid)?;
        let aes_key = value(&self.aes_key)?;
        let cipher = match (&aes_key, &appid) {
            (Some(key), Some(appid)) => Some(Cipher::new(key, appid).map_err(|e| {
                let name = self.aes_key.as_ref().map(SecretSource::name);
                format!("{}: {e}", name.unwrap_or_default())
            })?),
            (Some(_), None) => return Err(self.needs_appid(&self.aes_key, "safe mode")),
            (None, _) => None,
        };
        let credentials = self.credentials_of(appid.as_deref())?;
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            let secret = value(&self.appsecret)?;
            (&token, &appid, &aes_key, &secret).hash(&mut h);
            h.finish()
        };
        Ok(ResolvedSecrets {
            secrets: Secrets {
                body_key: BodyKey::from_secret(&token),
                deliver_key: DeliverKey::from_secret(&token),
                token: token.clone(),
                cipher,
            },
            credentials,
            fingerprint,
        })
    }

    /// The API credentials alone (the AppID and AppSecret): `None` without an AppSecret.
    pub fn credentials(&self) -> Result<Option<Credentials>, String> {
        let appid = value(&self.appid)?;
        self.credentials_of(appid.as_deref())
    }

    fn credentials_of(&self, appid: Option<&str>) -> Result<Option<Credentials>, String> {
        match (appid, value(&self.appsecret)?) {
            (Some(appid), Some(secret)) => Ok(Some(Credentials::new(appid, &secret))),
            (None, Some(_)) => Err(self.needs_appid(&self.appsecret, "the API")),
            (_, None) => Ok(None),
        }
    }

    /// `what` is given but the AppID is not: the message names both sources.
    fn needs_appid(&self, what: &Option<SecretSource>, needs: &str) -> String {
        let appid = match &self.appid {
            Some(source) => format!("{} is not", source.describe()),
            None => "no appid_env or appid_file is".into(),
        };
        format!("{} is set but {appid}: {needs} needs both", describe(what))
    }
}

/// An optional secret's value: `None` when unset or empty.
fn value(source: &Option<SecretSource>) -> Result<Option<String>, String> {
    Ok(match source.as_ref().map(SecretSource::read).transpose()? {
        Some(Read::Value(value)) => Some(value),
        _ => None,
    })
}

fn describe(source: &Option<SecretSource>) -> String {
    source
        .as_ref()
        .map_or_else(|| "a secret".to_owned(), SecretSource::describe)
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

    #[test]
    fn secrets_come_from_files_and_their_errors_name_the_source_only() {
        let dir = std::env::temp_dir().join(format!("wxrules-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "tok-from-file\n").unwrap();
        let sources = SecretSources {
            token: Some(SecretSource::File(dir.join("token"))),
            ..SecretSources::default()
        };
        let resolved = sources.resolve().unwrap();
        assert_eq!(resolved.secrets.token(), "tok-from-file");
        let missing = SecretSources {
            token: Some(SecretSource::Env("WXRULES_TEST_UNSET_VARIABLE_42".into())),
            ..SecretSources::default()
        };
        let e = missing.resolve().err().unwrap();
        assert_eq!(
            e,
            "environment variable WXRULES_TEST_UNSET_VARIABLE_42 is not set"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A secret's file is never quoted, whatever it holds: a wrong key, a file of the wrong
    /// kind (the rules file, `/etc/passwd`), one past the size cap, bytes that are not text.
    #[test]
    fn a_secret_files_content_never_reaches_an_error() {
        let dir = std::env::temp_dir().join(format!("wxrules-quoted-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "tok\n").unwrap();
        std::fs::write(dir.join("appid"), "wx-s3cr3t-appid\n").unwrap();
        std::fs::write(dir.join("key"), "s3cr3t key\n\u{1b}[31m").unwrap();
        std::fs::write(dir.join("passwd"), "root:x:0:0:s3cr3t:/root:/bin/bash\n").unwrap();
        std::fs::write(dir.join("big"), "s3cr3t".repeat(20_000)).unwrap();
        std::fs::write(dir.join("binary"), b"s3cr3t\xff\xfe").unwrap();
        let file = |name: &str| Some(SecretSource::File(dir.join(name)));
        for key in ["key", "passwd", "big", "binary"] {
            let e = SecretSources {
                token: file("token"),
                appid: file("appid"),
                aes_key: file(key),
                ..SecretSources::default()
            }
            .resolve()
            .err()
            .unwrap();
            assert!(!e.contains("s3cr3t") && !e.contains('\u{1b}'), "{key}: {e}");
            assert!(
                e.contains(&dir.join(key).display().to_string()),
                "{key}: {e}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// One rule for an empty value, whether a variable or a file holds it: an optional
    /// secret left empty is not used, a required one says it is empty.
    #[test]
    fn an_empty_value_is_no_value_everywhere() {
        let dir = std::env::temp_dir().join(format!("wxrules-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "tok\n").unwrap();
        std::fs::write(dir.join("empty"), " \n").unwrap();
        let file = |name: &str| Some(SecretSource::File(dir.join(name)));
        let resolved = SecretSources {
            token: file("token"),
            appid: file("empty"),
            aes_key: file("empty"),
            appsecret: file("empty"),
        }
        .resolve()
        .unwrap();
        assert!(resolved.secrets.cipher().is_none());
        assert!(resolved.credentials.is_none());
        let e = SecretSources {
            token: file("empty"),
            ..SecretSources::default()
        }
        .resolve()
        .err()
        .unwrap();
        assert_eq!(e, format!("file {} is empty", dir.join("empty").display()));
        let e = SecretSources {
            token: file("token"),
            appid: file("empty"),
            appsecret: file("token"),
            ..SecretSources::default()
        }
        .resolve()
        .err()
        .unwrap();
        assert!(e.ends_with("is not: the API needs both"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
