//! Making an account serve: `prepare` reads its secrets and loads its rules (blocking, on
//! any thread; `prepare_all` on every core), `Builder::build` gives it its metrics, API
//! client and outbox and makes its first `Live` (on the server's runtime: the outbox spawns
//! its senders). `stamp` fingerprints what a load reads, so a reload can skip an account
//! whose files did not change. The one way an account is built, at start and on reload.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::secrets::{ResolvedSecrets, Secrets};
use super::{Account, AccountParts, AccountSpec, Live, Mode};
use crate::act::media::Uploads;
use crate::act::outbox::{Outbox, OverQuota};
use crate::clock::Clock;
use crate::rules::{self, Sources};
use crate::store::media::MediaStore;
use crate::telemetry::metrics::Metrics;
use crate::wechat_api::Credentials;

/// What building an account needs besides its own spec.
#[derive(Clone)]
pub struct Builder {
    pub clock: Arc<dyn Clock>,
    /// WeChat's API (`--wechat-api`).
    pub wechat_api: String,
    /// Shared access tokens and outboxes, with `--store redis://…`.
    pub redis: Option<Arc<crate::store::Link>>,
    pub outbox: crate::act::outbox::Config,
    /// WeChat's API's HTTP client, one for every account (`wechat_api::http_client`).
    pub http: reqwest::Client,
    pub mode: Mode,
    /// The process's own metrics: a fleet of one's account counts into them (its series
    /// carry no `account` label, as in Part 1); each account of a config file has its own.
    pub metrics: Metrics,
    /// Where each account's outbox hands the messages WeChat refuses because a user's
    /// quota is spent (45047): the server's slow answers, which keep them for the user's
    /// next message. `None`: they fail, as any final errcode.
    pub over_quota: Option<Arc<dyn OverQuota>>,
}

/// An account read and loaded, not yet serving: what a blocking thread can make.
pub struct Prepared {
    spec: AccountSpec,
    secrets: ResolvedSecrets,
    loaded: rules::Loaded,
    stamp: u64,
}

impl Prepared {
    /// The warnings its rules had.
    pub fn warnings(&self) -> &[rules::RuleError] {
        &self.loaded.warnings
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn spec(&self) -> &AccountSpec {
        &self.spec
    }

    /// `spec` with `secrets` given rather than read (tests, tools): its rules loaded.
    pub fn with_secrets(
        spec: &AccountSpec,
        secrets: Secrets,
    ) -> Result<Prepared, rules::LoadError> {
        let stamp = stamp(&spec.sources);
        Ok(Prepared {
            spec: spec.clone(),
            secrets: ResolvedSecrets {
                secrets,
                credentials: None,
                fingerprint: 0,
            },
            loaded: rules::load(&spec.sources)?,
            stamp,
        })
    }

    /// The stamp of its files, taken before they were read.
    pub fn stamp(&self) -> u64 {
        self.stamp
    }
}

/// Why an account could not be prepared: its secrets, or its rules (each as
/// `file:line:col: …`).
#[derive(Debug)]
pub struct Unprepared {
    pub account: String,
    pub errors: Vec<String>,
}

/// Reads the secrets and loads the rules of `spec`.
pub fn prepare(spec: &AccountSpec) -> Result<Prepared, Unprepared> {
    let fail = |errors: Vec<String>| Unprepared {
        account: spec.name.clone(),
        errors,
    };
    let stamp = stamp(&spec.sources);
    let secrets = spec
        .secrets
        .resolve()
        .map_err(|e| fail(vec![format!("account `{}`: {e}", spec.name)]))?;
    let loaded = rules::load(&spec.sources)
        .map_err(|e| fail(e.0.iter().map(ToString::to_string).collect()))?;
    let unfit = rules::account_fit(&loaded.rules, &spec.sources.rules, spec.customer_service);
    if !unfit.is_empty() {
        return Err(fail(unfit.iter().map(ToString::to_string).collect()));
    }
    Ok(Prepared {
        spec: spec.clone(),
        secrets,
        loaded,
        stamp,
    })
}

/// `prepare` for every spec, on every core: 1,000 accounts of 200 rules each load in about a
/// second on two. In the order given.
pub fn prepare_all(specs: &[AccountSpec]) -> Vec<Result<Prepared, Unprepared>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(specs.len().max(1));
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(usize, Result<Prepared, Unprepared>)>> =
        Mutex::new(Vec::with_capacity(specs.len()));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(spec) = specs.get(i) else { break };
                // A panic while loading one account is that account's failure, not the
                // reload's (nor, at start, the process's).
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    prepare(spec)
                }))
                .unwrap_or_else(|_| {
                    Err(Unprepared {
                        account: spec.name.clone(),
                        errors: vec![format!(
                            "account `{}`: loading it failed unexpectedly (a bug: please report it)",
                            spec.name
                        )],
                    })
                });
                done.lock().push((i, result));
            });
        }
    });
    let mut done = done.into_inner();
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

impl Builder {
    /// Makes a prepared account serve: its metrics (labelled with its name with a config
    /// file), API client, outbox and first `Live`. Runs on the server's runtime (the outbox
    /// spawns its senders). An account rebuilt (its secrets or path changed) keeps the
    /// metrics and last hits of the one it replaces, `previous`.
    pub fn build(&self, prepared: Prepared, previous: Option<&Live>) -> Arc<Live> {
        let Prepared {
            spec,
            secrets,
            mut loaded,
            stamp: _,
        } = prepared;
        let metrics = match previous {
            Some(previous) => {
                loaded.rules.carry_last_hits(&previous.rules);
                previous.metrics().clone()
            }
            None if self.mode == Mode::Single => self.metrics.clone(),
            None => Metrics::for_account(&spec.name),
        };
        metrics.set_rules_loaded(loaded.rules.rules().len());
        let appid = secrets.credentials.as_ref().map(|c| c.appid.clone());
        let (outbox, senders, api) = self.outbox_for(secrets.credentials, &metrics);
        let mut account = Account::new(
            &spec,
            &self.mode,
            AccountParts {
                metrics,
                outbox: Arc::new(outbox),
                senders,
                secrets_fingerprint: secrets.fingerprint,
            },
        );
        if let Some(over_quota) = &self.over_quota {
            let scope = account.scope();
            account
                .outbox
                .keep_over_quota(Arc::clone(over_quota), scope);
        }
        // Replies' media files are uploaded through the API, on the server's runtime.
        if let (Some(api), Some(appid), Ok(runtime)) =
            (api, appid, tokio::runtime::Handle::try_current())
        {
            let store = match &self.redis {
                Some(redis) => MediaStore::shared(Arc::clone(redis), &appid),
                None => MediaStore::memory(),
            };
            let name = (self.mode != Mode::Single).then(|| Arc::from(spec.name.as_str()));
            account.media = Some(Uploads::new(api, store, runtime, name));
        }
        if let Some(media) = &account.media {
            media.start(&mut loaded.rules);
        }
        Arc::new(Live {
            rules: loaded.rules,
            loaded_at: self.clock.now(),
            secrets: Arc::new(secrets.secrets),
            account: Arc::new(account),
        })
    }

    /// An account's outbox and its senders, through WeChat's API with `credentials`
    /// (shared through Redis when there is one); without an AppSecret, an outbox that
    /// refuses (and counts) what it is given.
    /// Also the API client, when there is an AppSecret: the media uploads use it too.
    pub fn outbox_for(
        &self,
        credentials: Option<Credentials>,
        metrics: &Metrics,
    ) -> (
        Outbox,
        Option<crate::act::outbox::Senders>,
        Option<Arc<crate::wechat_api::Api>>,
    ) {
        let appid = credentials.as_ref().map(|c| c.appid.clone());
        let mut api = crate::wechat_api::Api::with_http(
            &self.wechat_api,
            credentials,
            metrics.clone(),
            self.http.clone(),
        );
        // With Redis, the access token is shared: one fetch for every instance.
        if let Some(redis) = &self.redis {
            api = api.share_tokens(Arc::clone(redis));
        }
        if !api.can_send() {
            return (Outbox::disabled(metrics.clone()), None, None);
        }
        let api = Arc::new(api);
        let (outbox, senders) = match (&self.redis, appid) {
            // With Redis the outbox is shared by the instances, and survives them.
            (Some(redis), Some(appid)) => {
                Outbox::start_shared(&api, self.outbox, metrics, redis, &appid)
            }
            _ => Outbox::start(&api, self.outbox, metrics.clone()),
        };
        (outbox, Some(senders), Some(api))
    }
}

/// A fingerprint of what a load reads: the rules file and every directory and file under
/// the templates directory, walked as a load walks it (`rules::walk_templates`): size,
/// times, inode. A reload skips an account whose stamp did not change. Times include the
/// change time, which no tool sets back.
pub fn stamp(sources: &Sources) -> u64 {
    stamp_with(sources, &mut HashMap::new())
}

/// `stamp`, taking the stamps of templates directories walked already in this pass from
/// `dirs`: accounts that share one directory walk it once per reload.
pub fn stamp_with<'a>(sources: &'a Sources, dirs: &mut HashMap<&'a Path, u64>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match std::fs::metadata(&sources.rules) {
        Ok(m) => hash_meta(&m, &mut h),
        Err(e) => e.kind().hash(&mut h),
    }
    dirs.entry(sources.templates.as_path())
        .or_insert_with(|| templates_stamp(&sources.templates))
        .hash(&mut h);
    h.finish()
}

/// The stamp of a templates directory: itself and everything under it, walked as a load
/// walks it.
fn templates_stamp(dir: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match std::fs::metadata(dir) {
        Ok(m) => hash_meta(&m, &mut h),
        Err(e) => e.kind().hash(&mut h),
    }
    let walked = rules::walk_templates(dir, |path, m| {
        path.hash(&mut h);
        hash_meta(m, &mut h);
        Ok(())
    });
    // A walk that fails (a file that vanished, a loop too deep) changes the stamp too: the
    // load will say what is wrong.
    if let Err(e) = walked {
        e.error.kind().hash(&mut h);
    }
    h.finish()
}

fn hash_meta(m: &std::fs::Metadata, h: &mut impl std::hash::Hasher) {
    use std::hash::Hash;
    (
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.ino(),
        m.dev(),
    )
        .hash(h);
}
