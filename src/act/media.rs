//! Replies' media files made permanent material, in the background: after each load of an
//! account, every file its rules name (`image: { file: … }`) that has no media id yet is
//! looked up in the store (another instance, or this one before a restart, may have
//! uploaded it) and else uploaded (`material/add_material`) under the store's upload lock,
//! so that instances sharing a Redis upload each content once. Never on a push's path: a
//! reply whose file has no id yet is not made (`render::MEDIA_PENDING`).

use std::sync::Arc;
use std::time::Duration;

use crate::rules::{MediaFile, MediaIds, RuleSet};
use crate::store::media::{MediaStore, UploadLock};
use crate::wechat_api::{Api, Material, MediaRefresh};

/// How long an instance waits for another's upload of a file before it uploads it itself.
const WAIT_FOR_OTHER: Duration = Duration::from_secs(40);
const POLL_EVERY: Duration = Duration::from_millis(100);

/// An account's uploads: its API client, its store of ids, the ids its rule sets read, and
/// the runtime the uploads run on (a reload runs on a blocking thread).
#[derive(Debug)]
pub struct Uploads {
    api: Arc<Api>,
    store: Arc<MediaStore>,
    ids: Arc<MediaIds>,
    runtime: tokio::runtime::Handle,
    account: Option<Arc<str>>,
}

impl Uploads {
    /// Uploads through `api`, ids kept in `store`, run on `runtime`; `api` asks them for a
    /// new id when WeChat refuses one (40007).
    pub fn new(
        api: Arc<Api>,
        store: MediaStore,
        runtime: tokio::runtime::Handle,
        account: Option<Arc<str>>,
    ) -> Arc<Uploads> {
        let uploads = Arc::new(Uploads {
            api,
            store: Arc::new(store),
            ids: Arc::default(),
            runtime,
            account,
        });
        let weak: std::sync::Weak<dyn MediaRefresh> = Arc::downgrade(&uploads) as _;
        uploads.api.set_media_refresh(weak);
        uploads
    }

    /// Gives `rules` the account's media ids and starts uploading the files it names that
    /// have none yet, in the background.
    pub fn start(&self, rules: &mut RuleSet) {
        rules.use_media_ids(Arc::clone(&self.ids));
        let files: Vec<Arc<MediaFile>> = rules
            .media_files()
            .into_iter()
            .filter(|f| self.ids.get(f).is_none())
            .collect();
        if files.is_empty() {
            return;
        }
        let (api, store, ids, account) = (
            Arc::clone(&self.api),
            Arc::clone(&self.store),
            Arc::clone(&self.ids),
            self.account.clone(),
        );
        self.runtime.spawn(async move {
            store.ready().await;
            for file in files {
                ensure(&api, &store, &ids, &file, account.as_deref()).await;
            }
        });
    }
}

/// On 40007: the file whose id WeChat refused, forgotten (here and in the store, for the
/// other instances) and uploaded again.
impl MediaRefresh for Uploads {
    fn refresh<'a>(
        &'a self,
        media_id: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send + 'a>> {
        Box::pin(async move {
            let file = self.ids.file_of(media_id)?;
            self.ids.forget(&file);
            self.store.forget(file.kind, &file.sha256).await;
            ensure(
                &self.api,
                &self.store,
                &self.ids,
                &file,
                self.account.as_deref(),
            )
            .await;
            self.ids.get(&file)
        })
    }
}

/// Finds or makes `file`'s media id, and keeps it in `ids`.
async fn ensure(
    api: &Api,
    store: &MediaStore,
    ids: &MediaIds,
    file: &MediaFile,
    account: Option<&str>,
) {
    let until = tokio::time::Instant::now() + WAIT_FOR_OTHER;
    loop {
        if let Some(id) = store.get(file.kind, &file.sha256).await {
            ids.put(file, &id);
            return;
        }
        match store.lock(file.kind, &file.sha256).await {
            UploadLock::HeldByOther if tokio::time::Instant::now() < until => {
                tokio::time::sleep(POLL_EVERY).await;
            }
            lock => {
                // Another instance may have stored it between the look and the lock.
                if let Some(id) = store.get(file.kind, &file.sha256).await {
                    ids.put(file, &id);
                } else {
                    upload(api, store, ids, file, account).await;
                }
                if lock != UploadLock::HeldByOther {
                    store.unlock(file.kind, &file.sha256).await;
                }
                return;
            }
        }
    }
}

async fn upload(
    api: &Api,
    store: &MediaStore,
    ids: &MediaIds,
    file: &MediaFile,
    account: Option<&str>,
) {
    let (_, cap) = crate::rules::media_limits(file.kind);
    let path = file.path.clone();
    let read = tokio::task::spawn_blocking(move || crate::rules::read_bytes(&path, cap)).await;
    let Ok(Ok(bytes)) = read else {
        tracing::warn!(event = "media_unreadable", account, file = %file.name, "the reply's file could not be read again: a reload will say why");
        return;
    };
    if crate::rules::sha256_hex(&bytes) != file.sha256 {
        // Changed since the load: the reload that follows uploads the new content.
        return;
    }
    let filename = file
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("media");
    let material = Material {
        kind: file.kind,
        filename,
        bytes: &bytes,
        video: file.video.as_ref().map(|(t, d)| (t.as_str(), d.as_str())),
    };
    match api.add_material(&material).await {
        Ok(id) => {
            store.put(file.kind, &file.sha256, &id).await;
            ids.put(file, &id);
            tracing::info!(event = "media_uploaded", account, file = %file.name, kind = file.kind);
        }
        Err(e) => tracing::error!(
            event = "media_upload_failed",
            account,
            file = %file.name,
            errcode = e.errcode(),
            error = %e,
            "the reply's file could not be uploaded: its replies answer `success` until a reload uploads it"
        ),
    }
}
