//! `wxrules send`: a push signed (and in safe mode encrypted) as WeChat signs it, posted to a
//! running server; its answer printed, decrypted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};

use super::{read_message, secrets_of, SourceArgs};
use crate::accounts::Secrets;
use crate::clock::{Clock, SystemClock};
use crate::crypto::Cipher;
use crate::wire::Message;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["message", "text", "event"])))]
pub(super) struct SendArgs {
    /// The server's push URL [default: http://127.0.0.1:8080/wechat, or with --config the
    /// account's path on the file's `listen`].
    #[arg(long)]
    pub(super) url: Option<String>,
    /// Sign with the secrets of an account of this config file (and --account).
    #[arg(long, env = "WXRULES_CONFIG", value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
    /// The account of --config to sign as (may be left out when the file has one).
    #[arg(long, value_name = "NAME", requires = "config")]
    pub(super) account: Option<String>,
    /// A message XML file to send (its own fields, as written).
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
    /// The sender's OpenID (FromUserName) of a made-up message.
    #[arg(long, default_value = "o_wxrules_send_user")]
    pub(super) from: String,
    /// The account (ToUserName) of a made-up message.
    #[arg(long, default_value = "gh_wxrules_send")]
    pub(super) to: String,
    /// Encrypt the push as in safe mode (安全模式), and decrypt the answer.
    #[arg(long)]
    pub(super) safe: bool,
}

/// `wxrules send`: a push signed (and in safe mode encrypted) as WeChat signs it, posted to
/// `--url`; prints the status and the answer, decrypted.
pub(super) fn send(args: &SendArgs) -> anyhow::Result<ExitCode> {
    let source = SourceArgs {
        rules: PathBuf::new(),
        templates: PathBuf::new(),
        config: args.config.clone(),
        account: args.account.clone(),
        customer_service: None,
    };
    let (_, spec) = match source.one() {
        Ok(one) => one,
        Err(code) => return Ok(code),
    };
    let listen = match &args.config {
        Some(path) => crate::accounts::read_config(path)
            .ok()
            .and_then(|c| c.listen),
        None => None,
    };
    let target = match (&args.url, &spec) {
        (Some(url), _) => url.clone(),
        (None, Some(spec)) => format!(
            "http://{}{}",
            listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            spec.path
        ),
        (None, None) => "http://127.0.0.1:8080/wechat".to_owned(),
    };
    let secrets = secrets_of(spec.as_ref()).context("signing the push")?;
    let cipher = match (args.safe, secrets.cipher()) {
        (true, Some(cipher)) => Some(cipher),
        (true, None) if spec.is_none() => bail!("--safe needs WXRULES_AES_KEY and WXRULES_APPID"),
        (true, None) => bail!("--safe needs the account's aes_key and appid"),
        (false, _) => None,
    };
    let now = SystemClock.now();
    let xml = push_of(args, now)?;
    let (query, body) = signed(args, &secrets, cipher, &xml, now);
    let mut url = reqwest::Url::parse(&target).with_context(|| format!("--url {target}"))?;
    url.query_pairs_mut().extend_pairs(query);
    let path = url.path().to_owned();
    let (status, answer) = post(url, body, &target)?;
    let shown = match cipher {
        Some(cipher) => opened(&secrets, cipher, answer)?,
        None => answer,
    };
    if status != reqwest::StatusCode::OK {
        println!("{status}");
        println!("{shown}");
        if let Some(hint) = hint(status, &path, args, spec.as_ref()) {
            eprintln!("hint: {hint}");
        }
        return Ok(ExitCode::from(1));
    }
    println!("{shown}");
    Ok(ExitCode::SUCCESS)
}

/// What a refusal most likely means, for the statuses a push is refused with: a push
/// signed with another token (403), or posted to a path no account is served at (404).
fn hint(
    status: reqwest::StatusCode,
    path: &str,
    args: &SendArgs,
    spec: Option<&crate::accounts::AccountSpec>,
) -> Option<String> {
    let token = match spec {
        Some(spec) => format!(
            "account `{}`'s token (its `token_env`/`token_file` in the config file)",
            spec.name
        ),
        None => "WXRULES_TOKEN".to_owned(),
    };
    match status.as_u16() {
        403 => Some(format!(
            "the server did not accept the signature: is {token} the server's token? (Or the clocks of this machine and the server are further apart than its --max-age.){}",
            if args.safe { " In safe mode the server also needs the same EncodingAESKey and AppID." } else { "" }
        )),
        404 => Some(match (&args.url, spec) {
            (Some(_), Some(spec)) => format!(
                "no account is served at `{path}`: account `{}` is served at `{}`; without --url, send takes that path from the config file",
                spec.name, spec.path
            ),
            (Some(_), None) => format!(
                "no account is served at `{path}`: a server without --config serves `/wechat`; one with --config serves each account at `/wechat/NAME` (or its `path`): give that path in --url, or --config and --account"
            ),
            (None, _) => format!(
                "no account is served at `{path}`: is the server at this address the one with this account? Give --url with the server's address and the account's path (`/wechat`, or `/wechat/NAME` with a config file)"
            ),
        }),
        _ => None,
    }
}

/// The push to send: the message file, or a text or an event made up at `now`.
fn push_of(args: &SendArgs, now: u64) -> anyhow::Result<String> {
    let message_id = now.to_string() + &format!("{:04}", rand::random::<u16>() % 10_000);
    Ok(match (&args.message, &args.text, &args.event) {
        (Some(path), _, _) => read_message(path)?,
        (_, Some(text), _) => made_up(
            args,
            &[
                ("MsgType", "text"),
                ("Content", text),
                ("MsgId", &message_id),
            ],
            now,
        ),
        (_, _, Some(event)) => {
            let mut kind = vec![("MsgType", "event"), ("Event", event.as_str())];
            kind.extend(args.event_key.as_deref().map(|k| ("EventKey", k)));
            made_up(args, &kind, now)
        }
        _ => bail!("give a message file, --text or --event"),
    })
}

/// The query WeChat would sign `xml` with, and the body: `xml`, or with `cipher` its
/// safe-mode envelope (and the query's `msg_signature`).
fn signed(
    args: &SendArgs,
    secrets: &Secrets,
    cipher: Option<&Cipher>,
    xml: &str,
    now: u64,
) -> (Vec<(&'static str, String)>, String) {
    let timestamp = now.to_string();
    let nonce = rand::random::<u32>().to_string();
    let signature = crate::crypto::sign(&[secrets.token(), &timestamp, &nonce]);
    let parsed = Message::parse(xml.as_bytes());
    let openid = parsed
        .as_ref()
        .map_or_else(|_| args.from.clone(), |m| m.from_user().to_owned());
    let mut query = vec![
        ("signature", signature),
        ("timestamp", timestamp.clone()),
        ("nonce", nonce.clone()),
        ("openid", openid),
    ];
    let Some(cipher) = cipher else {
        return (query, xml.to_owned());
    };
    let encrypt = cipher.encrypt(xml.as_bytes());
    let msg_signature = crate::crypto::sign(&[secrets.token(), &timestamp, &nonce, &encrypt]);
    query.push(("encrypt_type", "aes".into()));
    query.push(("msg_signature", msg_signature));
    let to = parsed.map_or_else(|_| args.to.clone(), |m| m.to_user().to_owned());
    let body = crate::wire::write_fields(&[("ToUserName".into(), to), ("Encrypt".into(), encrypt)]);
    (query, body)
}

/// Posts `body` to `url` (shown as `target`): its status and answer.
fn post(
    url: reqwest::Url,
    body: String,
    target: &str,
) -> anyhow::Result<(reqwest::StatusCode, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the HTTP client")?;
    runtime
        .block_on(async {
            let response = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()?
                .post(url)
                .header("Content-Type", "text/xml")
                .body(body)
                .send()
                .await?;
            let status = response.status();
            Ok::<_, reqwest::Error>((status, response.text().await?))
        })
        .map_err(|e| anyhow::anyhow!("cannot send to {target}: {}", e.without_url()))
}

/// A safe-mode answer checked (its own signature, as WeChat checks it) and decrypted; any
/// other answer as it came.
fn opened(secrets: &Secrets, cipher: &Cipher, answer: String) -> anyhow::Result<String> {
    let Ok(reply) = crate::wire::parse_encrypted_reply(answer.as_bytes()) else {
        return Ok(answer);
    };
    let expected = crate::crypto::sign(&[
        secrets.token(),
        &reply.timestamp,
        &reply.nonce,
        &reply.encrypt,
    ]);
    if reply.msg_signature != expected {
        bail!("the answer's MsgSignature does not match: {answer}");
    }
    let plain = cipher
        .decrypt(&reply.encrypt)
        .context("the answer does not decrypt")?;
    Ok(String::from_utf8_lossy(&plain).into_owned())
}

/// The XML of a made-up push from `--from` to `--to`.
pub(super) fn made_up(args: &SendArgs, kind: &[(&str, &str)], now: u64) -> String {
    crate::explain::made_up(&args.to, &args.from, kind, now)
}
