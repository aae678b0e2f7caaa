//! `wxrules explain`: which rule answers a message, why, and the reply, as text or JSON.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};

use super::{load_or_report, read_message, secrets_of, SourceArgs};
use crate::accounts::Secrets;
use crate::answer::Outcome;
use crate::clock::{Clock, SystemClock};
use crate::wire::Message;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["message", "text", "event"])))]
pub(super) struct ExplainArgs {
    #[command(flatten)]
    pub(super) sources: SourceArgs,
    /// A message XML file, as WeChat posts it.
    pub(super) message: Option<PathBuf>,
    /// A text message with this content.
    #[arg(long)]
    pub(super) text: Option<String>,
    /// An event with this name (subscribe, CLICK, SCAN, …).
    #[arg(long)]
    pub(super) event: Option<String>,
    /// The event's EventKey.
    #[arg(long, requires = "event")]
    pub(super) event_key: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(super) json: bool,
    /// For a rule with a `call`: the service's answer (a JSON file) to use; no call is made.
    #[arg(long, value_name = "FILE", conflicts_with = "call_error")]
    pub(super) call_response: Option<PathBuf>,
    /// For a rule with a `call`: answer as if the call had failed for this reason.
    #[arg(long, value_name = "REASON")]
    pub(super) call_error: Option<String>,
    /// Evaluate the rules' `active` windows at this moment (RFC 3339) instead of now.
    #[arg(long, value_name = "TIME")]
    pub(super) at: Option<jiff::Timestamp>,
    /// Start from a user in this conversation state (as if a rule had `set:` it).
    #[arg(long, value_name = "NAME")]
    pub(super) state: Option<String>,
    /// A var of that state (`--var phone=13800138000`; repeat for more).
    #[arg(
        long = "var",
        visible_alias = "vars",
        value_name = "KEY=VALUE",
        requires = "state"
    )]
    pub(super) vars: Vec<String>,
    /// With `--state`: the user's answers in it so far.
    #[arg(long, value_name = "N", requires = "state", default_value_t = 0)]
    pub(super) tries: u32,
}

pub(super) fn explain(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let (sources, spec) = match args.sources.one() {
        Ok(one) => one,
        Err(code) => return Ok(code),
    };
    let loaded = match load_or_report(&sources) {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let now = SystemClock.now();
    let xml = message_xml(args, now)?;
    let message = parse_for_explain(&xml, spec.as_ref())?;
    let rules = &loaded.rules;
    let at = match args.at {
        Some(at) => u64::try_from(at.as_second()).context("--at is before 1970")?,
        None => now,
    };
    let stub_value = match &args.call_response {
        Some(path) => Some(call_response(path)?),
        None => None,
    };
    let stub = crate::act::call::stub(stub_value.as_ref(), args.call_error.as_deref());
    let caller = crate::act::call::Caller::new().context("the HTTP client of calls")?;
    let state = start_state(args, at)?;
    let explained = crate::explain::explain(
        rules,
        &message,
        at,
        now,
        &caller,
        stub.as_ref(),
        state.as_ref(),
    );
    if args.json {
        let value = explained.to_json(&sources.rules);
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_found(&explained, &sources.rules.display().to_string());
    if let Some(call) = &explained.call {
        print_call(call)?;
    }
    print_outcome(&explained.outcome);
    if let Some(state) = &explained.state {
        let shown = |s: Option<&crate::rules::conversation::UserState>| match s {
            Some(s) if s.vars.is_empty() => s.name.clone(),
            Some(s) => format!("{} {:?}", s.name, s.vars),
            None => "none".to_owned(),
        };
        println!(
            "state: {} → {}",
            shown(state.before.as_ref()),
            shown(state.after.as_ref())
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `--state NAME --var k=v`: the state the user is in, as if set just now.
fn start_state(
    args: &ExplainArgs,
    at: u64,
) -> anyhow::Result<Option<crate::rules::conversation::UserState>> {
    let Some(name) = &args.state else {
        return Ok(None);
    };
    if let Some(problem) = crate::rules::conversation::name_problem(name.trim()) {
        bail!("--state: {problem}");
    }
    let mut vars = std::collections::BTreeMap::new();
    for pair in &args.vars {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--var is KEY=VALUE (`--var phone=13800138000`)");
        };
        let value = crate::rules::conversation::bounded_var(value.to_owned());
        vars.insert(key.trim().to_owned(), value);
    }
    if vars.len() > crate::rules::conversation::MAX_VARS {
        bail!(
            "--var: a state holds at most {} vars",
            crate::rules::conversation::MAX_VARS
        );
    }
    Ok(Some(crate::rules::conversation::UserState {
        name: name.trim().to_owned(),
        vars,
        tries: args.tries,
        rule: String::new(),
        expires: at.saturating_add(crate::rules::conversation::DEFAULT_TTL.as_secs()),
    }))
}

/// The message to explain: the file, or a text or an event made up at `now`.
fn message_xml(args: &ExplainArgs, now: u64) -> anyhow::Result<String> {
    Ok(match (&args.message, &args.text, &args.event) {
        (Some(path), _, _) => read_message(path)?,
        (_, Some(text), _) => crate::explain::synthetic(
            &[("MsgType", "text"), ("Content", text), ("MsgId", "1")],
            now,
        ),
        (_, _, Some(event)) => {
            let mut kind = vec![("MsgType", "event"), ("Event", event.as_str())];
            kind.extend(args.event_key.as_deref().map(|k| ("EventKey", k)));
            crate::explain::synthetic(&kind, now)
        }
        _ => bail!("give a message file, --text or --event"),
    })
}

/// `--call-response FILE`: the service's answer to use, as JSON.
fn call_response(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text = crate::rules::read_text(path, crate::act::call::MAX_ANSWER as u64)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// The rule found, each criterion with whether it held, and the captures.
fn print_found(explained: &crate::explain::Explanation, rules_path: &str) {
    match &explained.found {
        None => println!("no rule matched"),
        Some(found) => {
            println!("rule: {} ({}:{})", found.name, rules_path, found.line);
            if found.criteria.is_empty() {
                println!("  (no criteria: matches every message)");
            }
            for (criterion, held) in &found.criteria {
                println!("  {} {criterion}", if *held { "✓" } else { "✗" });
            }
            if !found.captures.is_empty() {
                println!("captures:");
                for (k, v) in &found.captures {
                    println!("  {k} = {v:?}");
                }
            }
        }
    }
}

/// What a rule's call would ask, and what `late` would do.
fn print_call(call: &crate::explain::CallShown) -> anyhow::Result<()> {
    let request = &call.request;
    if let Some(error) = request.get("error").and_then(|e| e.as_str()) {
        bail!("{error}");
    }
    let text = |key: &str| request.get(key).and_then(|v| v.as_str()).unwrap_or("");
    println!("call: {} {}", text("method"), text("url"));
    println!("  timeout: {} ms", request["timeout_ms"]);
    if let Some(body) = request.get("body") {
        println!("  body: {body}");
    }
    if let Some(holding) = &call.holding {
        println!(
            "late: a push the call has not answered within {} ms gets:",
            request["late_after_ms"]
        );
        println!("  {}", holding.body());
        println!("  and the reply below goes out through the customer-service API");
    }
    if !call.stubbed {
        println!(
            "no call made: the reply below is the rule's answer when the call fails; pass --call-response FILE (the service's JSON answer) to see the other"
        );
    }
    Ok(())
}

/// The reply as sent, and what `send:` sends after it.
fn print_outcome(outcome: &Outcome) {
    match outcome {
        Outcome::Replied {
            reply, xml, sends, ..
        } => {
            println!("reply ({}):", reply.msg_type());
            println!("{xml}");
            if !sends.is_empty() {
                println!("then sent through the customer-service API, in order:");
            }
            for (i, send) in sends.iter().enumerate() {
                match send
                    .as_ref()
                    .map_err(ToString::to_string)
                    .and_then(|reply| {
                        crate::wechat_api::CustomMessage::new("o_explain_user", reply.clone())
                            .map_err(|e| e.to_string())
                            .and_then(|m| serde_json::to_string(&m).map_err(|e| e.to_string()))
                    }) {
                    Ok(json) => println!("  {}. {json}", i + 1),
                    Err(error) => println!("  {}. not sent: {error}", i + 1),
                }
            }
        }
        Outcome::Ignored { rule: Some(rule) } => {
            println!("ignored by rule `{rule}`: answers `success`");
        }
        Outcome::Ignored { rule: None } => println!("ignored (no rule): answers `success`"),
        Outcome::Failed { error, .. } => {
            println!("render error: {error}");
            println!("answers `success`");
        }
    }
}

/// A plain message, or a safe-mode body (`<Encrypt>` only), decrypted with the key and
/// AppID of `WXRULES_AES_KEY` and `WXRULES_APPID`. No signature is checked: there is no query.
pub(super) fn parse_for_explain(
    xml: &str,
    account: Option<&crate::accounts::AccountSpec>,
) -> anyhow::Result<Message> {
    // The secrets are read only for an encrypted message, and only when a key is set.
    let encrypted = crate::wire::parse_encrypted(xml.as_bytes()).is_ok();
    let keyed = match account {
        Some(spec) => spec.secrets.aes_key.is_some(),
        None => std::env::var_os("WXRULES_AES_KEY").is_some(),
    };
    let secrets = if encrypted && keyed {
        Some(secrets_of(account).context("decrypting an encrypted message")?)
    } else {
        None
    };
    let cipher = secrets.as_ref().and_then(Secrets::cipher);
    crate::explain::read_push(xml.as_bytes(), cipher).map_err(|e| match e {
        crate::explain::PushError::NoKey => anyhow::anyhow!(
            "an encrypted message needs an AES key and AppID (WXRULES_AES_KEY and WXRULES_APPID, or the account's)"
        ),
        e => anyhow::Error::new(e),
    })
}
