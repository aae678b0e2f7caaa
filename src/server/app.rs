//! The route table and the state every worker shares. `main` and the tests build the App
//! through the same `configure`.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{guard, web};

use super::{body, health, push, query};
use crate::accounts::{Accounts, Live};
use crate::clock::Clock;
use crate::reload::Fleet;
use crate::store::dedup::Dedup;
use crate::telemetry::metrics::Metrics;

/// The largest request body accepted (64 KiB); WeChat's pushes are a few KiB at most.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// How long a push may take, from its arrival to its answer, before wxrules gives up and
/// answers `success`: well within WeChat's 5 s, leaving room for the network both ways.
pub const DEFAULT_DEADLINE: Duration = crate::wire::PASSIVE_DEADLINE;

/// How long a push's body may take to arrive once its headers have (actix bounds the
/// headers themselves, `client_request_timeout`). A real push is a few KiB sent at once.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// Request-handling options that are not secrets.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Refuse requests whose `timestamp` is further than this from now; 0 turns it off.
    pub max_age: u64,
    pub body_limit: usize,
    /// The time the body has to arrive in full, from the start of the handler; past it,
    /// 408 and the connection is closed.
    pub body_timeout: Duration,
    /// The time budget of one push (dedup included); past it the answer is `success`.
    pub deadline: Duration,
    /// Whether `/healthz` and `/metrics` are served here; `false` when the admin port
    /// (`--admin-listen`) serves them instead.
    pub health_routes: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_age: 300,
            body_limit: DEFAULT_BODY_LIMIT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            deadline: DEFAULT_DEADLINE,
            health_routes: true,
        }
    }
}

/// What handlers share. Built once, outside the per-worker factory, and cloned into each
/// worker: the live rules are one `ArcSwap` per account, not one copy per worker.
#[derive(Clone)]
pub struct AppState {
    /// The accounts served (by push path: one, `/wechat`, without `--config`) and what
    /// reloads them.
    pub fleet: Arc<Fleet>,
    /// The process's own metrics (the dedup store, the log): the one account's metrics in
    /// the single-account mode, where everything is rendered from them as in Part 1.
    pub metrics: Metrics,
    pub clock: Arc<dyn Clock>,
    pub options: Options,
    /// Answers already given, so a WeChat retry gets the same bytes without the rules
    /// running again; shared by every worker (and, with Redis, every instance). Keys carry
    /// the account.
    pub dedup: Arc<Dedup>,
    /// The HTTP client of rules' `call`s: one connection pool for every worker.
    pub caller: crate::act::call::Caller,
    /// Late calls still running, waited for (briefly) at a stop.
    pub late_calls: Arc<crate::act::call::LateCalls>,
    /// Which rules are cooling down for which users (`cooldown:`).
    pub cooldowns: Arc<crate::store::cooldown::Cooldowns>,
    /// The signed queries of plaintext pushes, each with its body's hash: a captured query
    /// cannot carry another body (`store::replay`).
    pub replays: Arc<crate::store::replay::Replays>,
    /// WeChat's attempts joined to slow calls, and answers kept for users' next messages
    /// (`late.via: retries`, long answers).
    pub slow: Arc<super::slow::SlowAnswers>,
    /// Users' conversation states (`set:`, `when: { state }`).
    pub conversations: Arc<crate::store::conversation::Conversations>,
    /// The last pushes and each rule's last hit, for the dashboard; kept only when the
    /// admin port serves it (`--admin-listen`).
    pub recent: Option<Arc<crate::telemetry::recent::Recent>>,
}

impl AppState {
    /// The accounts served, by push path.
    pub fn accounts(&self) -> &Accounts {
        &self.fleet.accounts
    }

    /// The account of a fleet of one (or the first of several), as it is now: for tests
    /// and tools that serve one.
    pub fn account(&self) -> Option<Arc<Live>> {
        self.accounts().first()
    }
}

/// Registers the routes on an App: the one route table, whether the server has one account
/// or many. Body limits are `Options::body_limit`, applied by `server::body` (no route uses
/// actix's own body extractors).
pub fn configure(cfg: &mut web::ServiceConfig, state: AppState) {
    let health_routes = state.options.health_routes;
    cfg.app_data(web::Data::new(state));
    // Every POST is tried as an account's push (`Accounts::route`; 404 when no account
    // serves its path). A scope with an empty prefix rather than a resource of the pattern
    // `/{path:.*}`: actix matches such a pattern with a regex, which took 7,000
    // instructions a push (callgrind, benches/instructions.sh), where a prefix costs none.
    // The push path bounds its body itself (`body::read`), before which the signature is
    // checked; other methods fall through to the scope below.
    // Deliveries of slow calls' answers: a static prefix, compared before the pushes'
    // catch-all (no pattern: a push pays one prefix comparison).
    cfg.service(
        web::scope(super::deliver::PREFIX)
            .guard(guard::Post())
            .default_service(web::to(super::deliver::receive)),
    );
    cfg.service(
        web::scope("")
            .guard(guard::Post())
            .default_service(web::to(push::receive)),
    );
    cfg.service({
        // One scope over every other route, so that the body bounds hold for all of
        // them, unknown paths (404) included.
        let scope = web::scope("").wrap(actix_web::middleware::from_fn(body::bound_bodies));
        let scope = if health_routes {
            scope
                .route("/healthz", web::get().to(health::healthz))
                .route("/metrics", web::get().to(health::metrics))
        } else {
            scope
        };
        // The URL check of any account's path.
        scope.default_service(web::get().to(query::verify_url))
    });
}
