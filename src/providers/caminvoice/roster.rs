//! The roster: which members an account polls, with which refresh token. The config's
//! members, then those only the store knows (`pollhook connect`, or a token CamInvoice
//! rotated): re-read at each cycle; an index names one member for the whole run (members are
//! only appended, an entry is replaced when a newer refresh token is stored for it).

use super::model::Connection;
use super::CamInvoice;
use crate::config::Secret;
use crate::store::{Store, StoreError, Unit};
use crate::time::now_ms;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// One member as polled: its endpoint id and refresh token.
pub(super) struct MemberCreds {
    pub(super) endpoint_id: String,
    pub(super) refresh_token: Secret,
    /// Identifies the refresh token without revealing it (first 16 hex of SHA-256).
    pub(super) fingerprint: String,
}

/// Identifies a refresh token without revealing it: the first 16 hex digits of its SHA-256.
pub(crate) fn fingerprint(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl CamInvoice {
    /// Member `idx`, as currently known.
    pub(super) fn member(&self, idx: usize) -> Arc<MemberCreds> {
        Arc::clone(&crate::locks::read(&self.members)[idx])
    }

    pub(super) fn member_count(&self) -> usize {
        crate::locks::read(&self.members).len()
    }

    /// Takes in the refresh tokens stored in the `connections` tree: a member only the store
    /// knows joins the polling; a stored token replaces the config's when it is newer (see
    /// [`Connection::supersedes`]). Logs changes only.
    pub(super) fn sync_members(&self, store: &Store) -> Result<(), StoreError> {
        for (endpoint, bytes) in store.connections(&self.account)? {
            let conn: Connection = match serde_json::from_slice(&bytes) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(member = %endpoint, "unreadable connection record in the state store ({e}); ignored");
                    continue;
                }
            };
            if !conn.supersedes(self.configured.get(&endpoint).map(String::as_str)) {
                continue;
            }
            let creds = Arc::new(MemberCreds {
                endpoint_id: endpoint.clone(),
                fingerprint: fingerprint(&conn.refresh_token),
                refresh_token: Secret::new(conn.refresh_token),
            });
            let mut members = crate::locks::write(&self.members);
            match members.iter().position(|m| m.endpoint_id == endpoint) {
                Some(i) if members[i].fingerprint == creds.fingerprint => {}
                Some(i) => {
                    members[i] = creds;
                    drop(members); // never hold the members and rotated locks together
                    crate::locks::lock(&self.rotated).remove(&i);
                    tracing::info!(member = %endpoint, source = %conn.source, stored_at = %crate::time::format_ms(conn.stored_at),
                        "using the refresh token from the state store (newer than the config's)");
                }
                None => {
                    members.push(creds);
                    tracing::info!(member = %endpoint, source = %conn.source,
                        "member connected with `pollhook connect`: polling it");
                }
            }
        }
        Ok(())
    }

    /// Stores a refresh token CamInvoice rotated during this cycle, so that it outlives the
    /// run (and takes precedence over the config's until the config changes).
    pub(super) async fn keep_rotated(&self, idx: usize, store: &Store) -> Result<(), StoreError> {
        let Some(new) = crate::locks::lock(&self.rotated).get(&idx).cloned() else {
            return Ok(());
        };
        let m = self.member(idx);
        let business_info = store
            .connections(&self.account)?
            .into_iter()
            .find(|(e, _)| *e == m.endpoint_id)
            .and_then(|(_, v)| serde_json::from_slice::<Connection>(&v).ok())
            .map(|c| c.business_info)
            .unwrap_or_default();
        let conn = Connection {
            refresh_token: new.expose().to_string(),
            source: "rotated".into(),
            stored_at: now_ms(),
            config_fingerprint: self.configured.get(&m.endpoint_id).cloned(),
            business_info,
        };
        let value = serde_json::to_vec(&conn).expect("a connection record serializes");
        store
            .put_connection(Unit::new(&self.account, &m.endpoint_id), value)
            .await?;
        crate::locks::write(&self.members)[idx] = Arc::new(MemberCreds {
            endpoint_id: m.endpoint_id.clone(),
            fingerprint: fingerprint(new.expose()),
            refresh_token: new,
        });
        crate::locks::lock(&self.rotated).remove(&idx);
        tracing::info!(member = %m.endpoint_id, "stored the refresh token CamInvoice rotated; it takes precedence over the config's");
        Ok(())
    }
}
