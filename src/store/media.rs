//! The media ids of an account's reply files, by kind and content (SHA-256): in process,
//! and with `--store redis://…` one copy for every instance (`wxrules:media:APPID:KIND:SHA`,
//! kept without expiry: the material is permanent) with an upload lock
//! (`…:lock`, `SET NX PX`) that lets one instance upload while the others wait for the id it
//! stores. What to upload and when is the uploader's; this only keeps what it is given.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::Cmd;

use super::{Lease, Link, Unavailable};

/// How long the upload lock lasts: past an upload's timeout, so that an instance that died
/// holding it does not hold the others up for long.
const LOCK_FOR: Duration = Duration::from_secs(30);
/// How long the uploads wait for Redis to be reached before they go on without it.
const READY_WITHIN: Duration = Duration::from_secs(5);

/// What taking the upload lock of one file came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadLock {
    /// This instance uploads.
    Taken,
    /// Another instance is uploading: wait for its id (`MediaStore::get`).
    HeldByOther,
    /// No Redis, or Redis did not answer: upload here.
    Here,
}

/// The media ids of one account: the same methods whether kept in process only or shared
/// through Redis too.
#[derive(Debug)]
pub struct MediaStore {
    here: Mutex<HashMap<String, String>>,
    /// The files this instance is uploading now: two loads in a row (a reload soon after
    /// start) do not upload one file twice.
    uploading: Mutex<std::collections::HashSet<String>>,
    shared: Option<(Arc<Link>, String)>,
    /// This instance's value of the locks it takes, so that it frees only its own.
    owner: String,
}

impl MediaStore {
    /// In process only.
    pub fn memory() -> MediaStore {
        MediaStore::new(None)
    }

    /// Shared through `link` with every instance of the account `appid`.
    pub fn shared(link: Arc<Link>, appid: &str) -> MediaStore {
        MediaStore::new(Some((link, format!("wxrules:media:{appid}"))))
    }

    fn new(shared: Option<(Arc<Link>, String)>) -> MediaStore {
        use rand::distributions::{Alphanumeric, DistString};
        MediaStore {
            here: Mutex::default(),
            uploading: Mutex::default(),
            shared,
            owner: Alphanumeric.sample_string(&mut rand::thread_rng(), 16),
        }
    }

    fn key(&self, kind: &str, sha256: &str) -> Option<String> {
        self.shared
            .as_ref()
            .map(|(_, prefix)| format!("{prefix}:{kind}:{sha256}"))
    }

    /// The media id of the file of `kind` with this content, if one was stored (here, or
    /// by any instance).
    pub async fn get(&self, kind: &str, sha256: &str) -> Option<String> {
        let local = format!("{kind}:{sha256}");
        if let Some(id) = self.here.lock().get(&local) {
            return Some(id.clone());
        }
        let (link, key) = (&self.shared.as_ref()?.0, self.key(kind, sha256)?);
        let get = Cmd::get(&key);
        let found = link
            .run(|mut conn| {
                let get = &get;
                async move { conn.query::<Option<String>>(get).await }
            })
            .await
            .ok()
            .flatten()
            .filter(|id| !id.is_empty())?;
        self.here.lock().insert(local, found.clone());
        Some(found)
    }

    /// Stores `id` for the file, here and for the other instances.
    pub async fn put(&self, kind: &str, sha256: &str, id: &str) {
        self.here
            .lock()
            .insert(format!("{kind}:{sha256}"), id.to_owned());
        let (Some((link, _)), Some(key)) = (&self.shared, self.key(kind, sha256)) else {
            return;
        };
        let set = Cmd::set(&key, id);
        // Redis away: another instance may upload the file again; never worse than that.
        let _ = link
            .run(|mut conn| {
                let set = &set;
                async move { conn.query::<()>(set).await }
            })
            .await;
    }

    /// Forgets the file's id, here and for the others: WeChat said it is no good (40007).
    pub async fn forget(&self, kind: &str, sha256: &str) {
        self.here.lock().remove(&format!("{kind}:{sha256}"));
        let (Some((link, _)), Some(key)) = (&self.shared, self.key(kind, sha256)) else {
            return;
        };
        let del = Cmd::del(&key);
        let _ = link
            .run(|mut conn| {
                let del = &del;
                async move { conn.query::<()>(del).await }
            })
            .await;
    }

    fn lease(&self, kind: &str, sha256: &str) -> Option<Lease> {
        let (link, _) = self.shared.as_ref()?;
        Some(Lease::new(
            Arc::clone(link),
            format!("{}:lock", self.key(kind, sha256)?),
            self.owner.clone(),
        ))
    }

    /// Waits (`READY_WITHIN` at most) until Redis is reached, when the ids are shared: the
    /// uploads start with a load, which at start-up is before the link's first connection
    /// is made, and a look meanwhile would find nothing and upload a file another instance
    /// has. Past the wait the uploads go on without Redis (each instance uploads its own).
    pub async fn ready(&self) {
        let Some((link, _)) = &self.shared else {
            return;
        };
        let until = tokio::time::Instant::now() + READY_WITHIN;
        while !link.connect().await && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Takes the upload lock of the file: this instance's, then with Redis every
    /// instance's.
    pub async fn lock(&self, kind: &str, sha256: &str) -> UploadLock {
        if !self.uploading.lock().insert(format!("{kind}:{sha256}")) {
            return UploadLock::HeldByOther;
        }
        let Some(lease) = self.lease(kind, sha256) else {
            return UploadLock::Here;
        };
        match lease.take(LOCK_FOR).await {
            Ok(true) => UploadLock::Taken,
            Ok(false) => {
                self.uploading.lock().remove(&format!("{kind}:{sha256}"));
                UploadLock::HeldByOther
            }
            Err(Unavailable) => UploadLock::Here,
        }
    }

    /// Lets the upload lock go, if it is still this instance's.
    pub async fn unlock(&self, kind: &str, sha256: &str) {
        self.uploading.lock().remove(&format!("{kind}:{sha256}"));
        if let Some(lease) = self.lease(kind, sha256) {
            lease.release().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_upload_at_a_time_per_file_and_ids_kept_by_kind_and_content() {
        let store = MediaStore::memory();
        assert_eq!(store.lock("image", "abc").await, UploadLock::Here);
        // A second load's uploads wait for the first's.
        assert_eq!(store.lock("image", "abc").await, UploadLock::HeldByOther);
        assert_eq!(store.lock("voice", "abc").await, UploadLock::Here);
        store.put("image", "abc", "MEDIA_1").await;
        store.unlock("image", "abc").await;
        assert_eq!(store.get("image", "abc").await.as_deref(), Some("MEDIA_1"));
        assert_eq!(store.get("voice", "abc").await, None);
        assert_eq!(store.lock("image", "abc").await, UploadLock::Here);
        store.forget("image", "abc").await;
        assert_eq!(store.get("image", "abc").await, None);
    }
}
