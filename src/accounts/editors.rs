//! Who may change the replies in the page: editors named in the config file (`editors:`,
//! each a name, a token by variable or file, a role and the accounts it may touch), and
//! `WXRULES_ADMIN_TOKEN`, the editor `admin` of every account. Tokens are read once, kept
//! only as SHA-256 digests and compared in constant time against every editor's; no token
//! is ever shown. No HTTP here: the admin port asks `Editors::who`.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::secrets::SecretSource;

/// What an editor may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// See everything, try messages, make drafts and apply them, roll back, reload.
    Editor,
    /// See everything and try messages; no writes.
    Viewer,
}

/// An editor as the config file writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEditor {
    pub(super) name: String,
    pub(super) token_env: Option<String>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) role: Role,
    pub(super) accounts: Option<Vec<String>>,
}

/// An editor as the config file describes it; the token is read when the server starts
/// (and on each reload of the config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditorSpec {
    pub name: String,
    pub token: SecretSource,
    pub role: Role,
    /// The accounts it may see and change; `None`: all.
    pub accounts: Option<Vec<String>>,
}

/// The shortest editor token accepted, as the admin token's.
pub const MIN_TOKEN: usize = 16;
/// The longest.
pub const MAX_TOKEN: usize = 512;
/// The editor `WXRULES_ADMIN_TOKEN` stands for.
pub const ADMIN: &str = "admin";

/// An editor with its token read.
pub struct Editor {
    pub name: Arc<str>,
    pub role: Role,
    pub accounts: Option<Vec<String>>,
    token: [u8; 32],
}

impl std::fmt::Debug for Editor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Editor")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("accounts", &self.accounts)
            .finish_non_exhaustive()
    }
}

impl Editor {
    /// Whether it may see `account` (its rules, pushes, history; try messages on it).
    pub fn may_see(&self, account: &str) -> bool {
        self.accounts
            .as_ref()
            .is_none_or(|list| list.iter().any(|a| a == account))
    }

    /// Whether it may change `account`'s replies (drafts, apply, roll back, reload).
    pub fn may_edit(&self, account: &str) -> bool {
        self.role == Role::Editor && self.may_see(account)
    }
}

/// The editors of a server: none means a tokenless admin port (loopback only, read-only).
#[derive(Debug, Default)]
pub struct Editors {
    list: Vec<Arc<Editor>>,
}

impl Editors {
    /// The editors of `specs`, their tokens read, and `WXRULES_ADMIN_TOKEN` (`admin`, an
    /// editor of every account) when given. Errors name the editor and the variable or
    /// file, never a token.
    pub fn resolve(specs: &[EditorSpec], admin_token: Option<&str>) -> Result<Editors, String> {
        let mut list = Vec::with_capacity(specs.len() + 1);
        if let Some(token) = admin_token {
            list.push(Arc::new(Editor {
                name: Arc::from(ADMIN),
                role: Role::Editor,
                accounts: None,
                token: digest(token),
            }));
        }
        for spec in specs {
            let token = spec
                .token
                .read_value()
                .map_err(|e| format!("editor `{}`: {e}", spec.name))?;
            check_shape(&token).map_err(|e| format!("editor `{}`: its token {e}", spec.name))?;
            list.push(Arc::new(Editor {
                name: Arc::from(spec.name.as_str()),
                role: spec.role,
                accounts: spec.accounts.clone(),
                token: digest(&token),
            }));
        }
        for (i, a) in list.iter().enumerate() {
            if list[..i]
                .iter()
                .any(|b| bool::from(a.token.ct_eq(&b.token)))
            {
                return Err(format!(
                    "editor `{}` has the token of another editor: each needs its own",
                    a.name
                ));
            }
        }
        Ok(Editors { list })
    }

    /// Whether there are none (then no request is signed in).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The editor whose token `token` is. Compared with every editor's, in constant time,
    /// whichever matches.
    pub fn who(&self, token: &str) -> Option<Arc<Editor>> {
        let given = digest(token);
        let mut found = None;
        for editor in &self.list {
            if bool::from(editor.token.ct_eq(&given)) {
                found = Some(Arc::clone(editor));
            }
        }
        found
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `token` is of a shape a client can send: 16 to 512 visible ASCII characters.
pub fn check_shape(token: &str) -> Result<(), String> {
    if token.chars().count() < MIN_TOKEN {
        return Err(format!("must be at least {MIN_TOKEN} characters"));
    }
    if token.len() > MAX_TOKEN {
        return Err(format!("must be at most {MAX_TOKEN} characters"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "must be visible ASCII characters only: no spaces, line breaks or other characters"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, var: &str, role: Role, accounts: Option<&[&str]>) -> EditorSpec {
        EditorSpec {
            name: name.into(),
            token: SecretSource::Env(var.into()),
            role,
            accounts: accounts.map(|a| a.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn tokens_find_their_editor_and_roles_limit_what_it_may_do() {
        std::env::set_var("WXRULES_TEST_EDITOR_WANG", "wang-token-0123456789");
        std::env::set_var("WXRULES_TEST_EDITOR_LI", "li-token-0123456789ab");
        let editors = Editors::resolve(
            &[
                spec(
                    "小王",
                    "WXRULES_TEST_EDITOR_WANG",
                    Role::Editor,
                    Some(&["shop"]),
                ),
                spec("小李", "WXRULES_TEST_EDITOR_LI", Role::Viewer, None),
            ],
            Some("the-admin-token-0123"),
        )
        .unwrap();
        let wang = editors.who("wang-token-0123456789").unwrap();
        assert_eq!(&*wang.name, "小王");
        assert!(wang.may_edit("shop") && !wang.may_see("news"));
        let li = editors.who("li-token-0123456789ab").unwrap();
        assert!(li.may_see("news") && !li.may_edit("news"));
        let admin = editors.who("the-admin-token-0123").unwrap();
        assert!(admin.may_edit("anything"));
        assert!(editors.who("wang-token-012345678").is_none());
        assert!(!format!("{editors:?}").contains("token-0123"));
    }

    #[test]
    fn bad_tokens_are_refused_by_the_editor_s_name() {
        std::env::set_var("WXRULES_TEST_EDITOR_SHORT", "short");
        let e = Editors::resolve(
            &[spec("a", "WXRULES_TEST_EDITOR_SHORT", Role::Editor, None)],
            None,
        )
        .unwrap_err();
        assert_eq!(e, "editor `a`: its token must be at least 16 characters");
        assert!(!e.contains("short"));
        std::env::set_var("WXRULES_TEST_EDITOR_SAME", "the-admin-token-0123");
        let e = Editors::resolve(
            &[spec("b", "WXRULES_TEST_EDITOR_SAME", Role::Viewer, None)],
            Some("the-admin-token-0123"),
        )
        .unwrap_err();
        assert!(e.contains("has the token of another editor"), "{e}");
    }
}
