//! The poller a user might write without pollhook: every cycle, list every document of every
//! member (both sides, all pages, one page after the other) and fetch every document's
//! detail, then compare. Run beside pollhook against the same simulator to show what the
//! diff-by-poll design saves.
//!
//! Its request count is exact (the list's pagination says how many pages and documents there
//! are). Its time is measured on a sample of list pages and details (walking a million
//! documents at 50 ms a request takes far longer than the benchmark should); the rest is
//! extrapolated at the measured rates, and the report marks such times with `~`.

use pollhook_sim::SimCredentials;
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;

/// Page size of the naive list walk (the simulator's maximum, as pollhook's default).
const PAGE: usize = 100;

/// What one naive cycle costs.
#[derive(Debug, Clone, Default)]
pub struct NaiveFigures {
    /// Requests one full cycle sends (tokens, list pages, one detail per document).
    pub requests: u64,
    /// Seconds one full cycle takes (extrapolated unless `measured_all`).
    pub secs: f64,
    pub documents: u64,
    /// Whether every list page and detail was fetched and timed.
    pub measured_all: bool,
}

/// One member's list walk: its token, the ids seen, and (pages in all, pages walked,
/// documents in all).
type Walk = (String, Vec<String>, (u64, u64, u64));

/// One naive cycle over every member, at most `concurrency` requests in flight, timing about
/// `sample` documents' worth of list pages and `sample` detail calls.
pub async fn cycle(
    base: &str,
    creds: &SimCredentials,
    concurrency: usize,
    sample: u64,
) -> Result<NaiveFigures, String> {
    let client = reqwest::Client::new();
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let members = creds.members.len().max(1) as u64;
    let pages_per_side = (sample.div_ceil(PAGE as u64) / (2 * members)).max(1);
    let began = Instant::now();
    let walks: Vec<_> = creds
        .members
        .iter()
        .map(|m| {
            let (client, gate, base) = (client.clone(), Arc::clone(&gate), base.to_string());
            let (user, pass) = (creds.client_id.clone(), creds.client_secret.clone());
            let refresh = m.refresh_token.clone();
            tokio::spawn(async move {
                let token = {
                    let _p = gate.acquire().await.expect("open");
                    let v = json(
                        client
                            .post(format!("{base}/api/v1/auth/token"))
                            .basic_auth(user, Some(pass))
                            .json(&serde_json::json!({ "refresh_token": refresh })),
                    )
                    .await?;
                    v["token"].as_str().ok_or("no token")?.to_string()
                };
                let mut ids = Vec::new();
                let (mut pages, mut walked, mut documents) = (0, 0, 0);
                for side in ["send", "received"] {
                    for page in 1..=pages_per_side {
                        let _p = gate.acquire().await.expect("open");
                        let v = json(
                            client
                                .get(format!(
                                    "{base}/api/v1/document?type={side}&page={page}&size={PAGE}"
                                ))
                                .bearer_auth(&token),
                        )
                        .await?;
                        walked += 1;
                        if page == 1 {
                            let p = &v["pagination"];
                            pages += p["total_pages"].as_u64().ok_or("no total_pages")?.max(1);
                            documents += p["total_counts"].as_u64().ok_or("no total_counts")?;
                        }
                        let data = v["data"].as_array().ok_or("no data")?;
                        ids.extend(
                            data.iter()
                                .filter_map(|d| d["document_id"].as_str().map(str::to_string)),
                        );
                        if data.len() < PAGE {
                            break;
                        }
                    }
                }
                Ok::<Walk, String>((token, ids, (pages, walked, documents)))
            })
        })
        .collect();
    let mut lists = Vec::new();
    let (mut pages, mut walked, mut documents) = (0, 0, 0);
    for w in walks {
        let (token, ids, (p, w, d)) = w.await.map_err(|e| e.to_string())??;
        (pages, walked, documents) = (pages + p, walked + w, documents + d);
        lists.push((token, ids));
    }
    let list_secs = began.elapsed().as_secs_f64() * pages as f64 / walked.max(1) as f64;

    // A sample of the details, spread over the members.
    let began = Instant::now();
    let listed: u64 = lists.iter().map(|(_, ids)| ids.len() as u64).sum();
    let mut fetches = Vec::new();
    let mut round = 0;
    while (fetches.len() as u64) < sample.min(listed) {
        for (token, ids) in &lists {
            if let Some(id) = ids.get(round) {
                let (client, gate) = (client.clone(), Arc::clone(&gate));
                let url = format!("{base}/api/v1/document/{id}");
                let token = token.clone();
                fetches.push(tokio::spawn(async move {
                    let _p = gate.acquire().await.expect("open");
                    json(client.get(url).bearer_auth(token)).await.map(|_| ())
                }));
            }
        }
        round += 1;
    }
    let sampled = fetches.len() as u64;
    for f in fetches {
        f.await.map_err(|e| e.to_string())??;
    }
    let per_detail = began.elapsed().as_secs_f64() / sampled.max(1) as f64;
    Ok(NaiveFigures {
        requests: members + pages + documents,
        secs: list_secs + per_detail * documents as f64,
        documents,
        measured_all: walked == pages && sampled == documents,
    })
}

async fn json(req: reqwest::RequestBuilder) -> Result<Value, String> {
    let r = req.send().await.map_err(|e| e.to_string())?;
    let status = r.status();
    let body = r.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("naive poller: HTTP {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}
