//! Onboarding a CamInvoice member: the connect URL a business opens, and the exchange of the
//! `authToken` it is redirected with for the member's refresh token.
//!
//! The exchange stores the refresh token and `business_info` in the state store (the
//! `connections` tree, through `store`); the CamInvoice provider takes connected members in at
//! its next cycle, whether or not the config lists them. This module never prints or logs a
//! token: the authToken and the refresh token stay [`Secret`]s from input to store.
//!
//! With the daemon running (sled allows one process), `pollhook connect` hands the authToken
//! to the daemon's admin endpoint, which runs [`exchange`] on its own store.
//!
//! The API is narrow on purpose — [`url`], [`new_state`], [`check_account`],
//! [`auth_token_from`], [`exchange`] — so the CLI and the admin endpoint name no CamInvoice
//! internals (client, records, fingerprints).

use super::client::{Api, ApiError};
use super::fingerprint;
use super::model::Connection;
use crate::config::{Account, CamInvoiceSettings, Config, ProviderSettings, ResolveError, Secret};
use crate::http::Http;
use crate::providers::RequestCount;
use crate::store::{Store, StoreError, Unit};
use crate::time::now_ms;
use serde::{Deserialize, Serialize};

/// Why a connect step failed, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no account named {0:?} in the config")]
    UnknownAccount(String),
    #[error("account {0:?} is not a CamInvoice account; only CamInvoice has a connect flow (OnlinePajak tokens go into the config)")]
    NotCamInvoice(String),
    #[error(transparent)]
    Secret(#[from] ResolveError),
    #[error("the authToken is empty: pass the value of authToken= from the address the browser was sent to (or that whole address)")]
    EmptyToken,
    #[error("the connect exchange failed: {0}")]
    Api(#[from] ApiError),
    #[error("CamInvoice answered with the endpoint id {0:?}, which pollhook cannot key state by (empty or containing '/')")]
    BadEndpoint(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `name` is a CamInvoice account of `config` (the only provider with a connect flow).
pub fn check_account(config: &Config, name: &str) -> Result<(), ConnectError> {
    caminvoice_account(config, name).map(|_| ())
}

/// The CamInvoice settings of account `name`.
fn caminvoice_account<'c>(
    config: &'c Config,
    name: &str,
) -> Result<(&'c Account, &'c CamInvoiceSettings), ConnectError> {
    let account = config
        .accounts
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| ConnectError::UnknownAccount(name.to_string()))?;
    match &account.provider {
        ProviderSettings::CamInvoice(s) => Ok((account, s)),
        ProviderSettings::OnlinePajak(_) => Err(ConnectError::NotCamInvoice(name.to_string())),
    }
}

/// The URL the business opens to approve the connection to account `account`:
/// `{base}/connect?client_id=..&redirect_url=..&state=..`, every value percent-encoded.
pub fn url(
    config: &Config,
    account: &str,
    redirect_url: &str,
    state: &str,
) -> Result<String, ConnectError> {
    let (_, s) = caminvoice_account(config, account)?;
    Ok(connect_url(s, redirect_url, state))
}

fn connect_url(s: &CamInvoiceSettings, redirect_url: &str, state: &str) -> String {
    format!(
        "{}/connect?client_id={}&redirect_url={}&state={}",
        s.base_url,
        encode(&s.client_id),
        encode(redirect_url),
        encode(state)
    )
}

/// A fresh `state` value: 16 random hex digits (the redirect carries it back).
pub fn new_state() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(v: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match (hex(bytes[i + 1]), bytes.get(i + 2).and_then(|b| hex(*b))) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The authToken from what the operator pasted: the bare token, or the whole address the
/// browser was redirected to (`...?authToken=...&state=...`).
pub fn auth_token_from(input: &str) -> Result<Secret, ConnectError> {
    let input = input.trim();
    let token = match input.split_once('?') {
        Some((_, query)) if query.contains("authToken=") => query
            .split('&')
            .find_map(|kv| kv.strip_prefix("authToken="))
            .map(decode)
            .unwrap_or_default(),
        _ => input.to_string(),
    };
    if token.is_empty() {
        return Err(ConnectError::EmptyToken);
    }
    Ok(Secret::new(token))
}

/// What a successful exchange stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Connected {
    pub account: String,
    pub endpoint_id: String,
    /// `business_info.company_name_en`, when CamInvoice sent it.
    pub company_name_en: Option<String>,
    /// Whether the config lists this member too (the stored token takes precedence until the
    /// config's refresh_token changes).
    pub in_config: bool,
}

/// Exchanges `auth_token` for the refresh token of a member of account `account` (`POST
/// /api/v1/auth/authorize/connect`, Basic auth) and stores it with `business_info`.
pub async fn exchange(
    config: &Config,
    account: &str,
    store: &Store,
    auth_token: &Secret,
) -> Result<Connected, ConnectError> {
    let (account, s) = caminvoice_account(config, account)?;
    exchange_for(account, s, store, auth_token).await
}

async fn exchange_for(
    account: &Account,
    s: &CamInvoiceSettings,
    store: &Store,
    auth_token: &Secret,
) -> Result<Connected, ConnectError> {
    if auth_token.expose().is_empty() {
        return Err(ConnectError::EmptyToken);
    }
    let secret = s.client_secret.resolve().map_err(ConnectError::Secret)?;
    let api = Api::new(Http::new(&account.http), &s.base_url, &s.client_id, &secret);
    let got = api
        .authorize_connect(auth_token, &RequestCount::default())
        .await?;
    let endpoint = got.endpoint_id.clone();
    if endpoint.is_empty() || endpoint.contains(['/', '\0']) {
        return Err(ConnectError::BadEndpoint(endpoint));
    }
    let configured = s.members.iter().find(|m| m.endpoint_id == endpoint);
    let config_fingerprint = match configured {
        None => None,
        Some(m) => Some(fingerprint(
            m.refresh_token
                .resolve()
                .map_err(ConnectError::Secret)?
                .expose(),
        )),
    };
    let company_name_en = got
        .business_info
        .get("company_name_en")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let record = Connection {
        refresh_token: got.refresh_token.expose().to_string(),
        source: "connect".into(),
        stored_at: now_ms(),
        config_fingerprint,
        business_info: got.business_info,
    };
    let value = serde_json::to_vec(&record).expect("a connection record serializes");
    store
        .put_connection(Unit::new(&account.name, &endpoint), value)
        .await?;
    tracing::info!(account = %account.name, member = %endpoint, "member connected; its refresh token is in the state store");
    Ok(Connected {
        account: account.name.clone(),
        endpoint_id: endpoint,
        company_name_en,
        in_config: configured.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connect_url_encodes_every_value() {
        let text = "[daemon]\nstate_dir = \"/x\"\n[[accounts]]\nname = \"a\"\nprovider = \"caminvoice\"\nbase_url = \"https://ci.example/\"\nclient_id = \"id &1\"\nclient_secret = \"s\"\n[[sinks]]\nkind = \"jsonl\"\npath = \"/x/e\"\n";
        let c = Config::parse(text, "t.toml".as_ref()).unwrap();
        assert_eq!(
            url(&c, "a", "https://erp.example/cb?x=1&y=2", "a b").unwrap(),
            "https://ci.example/connect?client_id=id%20%261&redirect_url=https%3A%2F%2Ferp.example%2Fcb%3Fx%3D1%26y%3D2&state=a%20b"
        );
        assert!(matches!(
            url(&c, "b", "https://erp.example/", "s"),
            Err(ConnectError::UnknownAccount(_))
        ));
    }

    #[test]
    fn the_auth_token_is_taken_bare_or_from_the_redirected_address() {
        assert_eq!(auth_token_from(" eyJ.a.b\n").unwrap().expose(), "eyJ.a.b");
        assert_eq!(
            auth_token_from("http://localhost/cb?authToken=eyJ.a%2Bb.c&state=s")
                .unwrap()
                .expose(),
            "eyJ.a+b.c"
        );
        assert!(auth_token_from("  ").is_err());
        assert!(auth_token_from("http://localhost/cb?authToken=&state=s").is_err());
    }
}
