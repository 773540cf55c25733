//! `pollhook check-config`: the config as pollhook understood it, secrets shown by their
//! source only; then whether every secret resolves and every webhook/NATS sink builds.

use super::Failure;
use crate::config::{Config, DeliveryOrder, ProviderSettings, SinkKind, Start};
use crate::shard::Shard;
use crate::sinks;
use crate::time::{format_duration, format_ms};
use std::process::ExitCode;

/// Prints the summary; exit 2 when a secret cannot be read or a sink cannot be built.
pub(super) fn run(config: &Config) -> Result<ExitCode, Failure> {
    let d = &config.daemon;
    println!("config {}: valid", config.file.display());
    println!("[daemon]");
    println!("  state_dir        {}", d.state_dir.display());
    let next = d
        .schedule
        .next_after(crate::time::utc(crate::time::now_ms()))
        .map(|t| format_ms(t.timestamp_millis()))
        .unwrap_or_else(|| "never".into());
    println!("  schedule         {}   (UTC; next {next})", d.schedule.0);
    match &d.resync_schedule {
        Some(s) => println!("  resync_schedule  {}", s.0),
        None => println!("  resync_schedule  off"),
    }
    match d.start {
        Start::Now => println!(
            "  start            now (a silent baseline is taken at each member's first cycle)"
        ),
        Start::At(t) => println!(
            "  start            {} (changes from then on are back-filled)",
            format_ms(t)
        ),
    }
    println!("  retention        {}", format_duration(d.retention));
    if d.shard.is_sharded() {
        println!(
            "  shard            {} (polls only the members a stable hash of account and member assigns to it)",
            d.shard
        );
    }
    println!("  log_format       {}", d.log_format.as_str());
    match d.admin_listen {
        Some(a) => println!(
            "  admin_listen     {a} (/healthz stale after {} scheduled runs without success)",
            d.healthz_periods
        ),
        None => println!("  admin_listen     off"),
    }
    for a in &config.accounts {
        println!("[[accounts]] {} ({})", a.name, a.provider.kind());
        match &a.provider {
            ProviderSettings::CamInvoice(c) => {
                println!("  base_url         {}", c.base_url);
                println!("  client_id        {}", c.client_id);
                println!("  client_secret    {}", c.client_secret.source.describe());
                println!("  overlap          {}", format_duration(c.overlap));
                if c.members.is_empty() {
                    println!("  members          none in the config (`pollhook connect` adds them to the state store)");
                }
                for m in &c.members {
                    println!(
                        "  member           {}  refresh_token {}{}",
                        m.endpoint_id,
                        m.refresh_token.source.describe(),
                        shard_note(d.shard, &a.name, &m.endpoint_id)
                    );
                }
                if d.shard.is_sharded() {
                    let owned = c
                        .members
                        .iter()
                        .filter(|m| d.shard.owns(&a.name, &m.endpoint_id))
                        .count();
                    println!(
                        "  this shard       owns {owned} of the {} configured member(s) ({}); members connected with `pollhook connect` are split the same way",
                        c.members.len(),
                        d.shard
                    );
                }
            }
            ProviderSettings::OnlinePajak(o) => {
                println!("  base_url         {}", o.base_url);
                println!(
                    "  npwp             {}{}",
                    o.npwp,
                    shard_note(d.shard, &a.name, &o.npwp)
                );
                println!(
                    "  token            {} ({})",
                    o.token.source.describe(),
                    if o.raw_auth { "raw" } else { "bearer" }
                );
                println!(
                    "  pacing           {} requests a minute, bursts of {}",
                    o.rate_limit, o.rate_burst
                );
                println!("  overlap          {}", format_duration(o.overlap));
                if !o.api.is_empty() {
                    println!("  api              overrides the assumed paths/fields (see [accounts.api])");
                }
            }
        }
        println!(
            "  http             timeout {}, {} retries from {}, Retry-After capped at {}, {} in flight",
            format_duration(a.http.timeout),
            a.http.max_retries,
            format_duration(a.http.retry_base),
            format_duration(a.http.retry_after_cap),
            a.http.concurrency
        );
    }
    for s in &config.sinks {
        print_sink(s);
    }
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    for w in config.file_warnings() {
        eprintln!("warning: {w}");
    }
    if let Err(errors) = config.resolve_secrets() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        return Ok(ExitCode::from(super::exit::CONFIG));
    }
    // Webhook secrets resolve; are they whsec_<base64>? NATS creds parse, TLS files read?
    let mut bad = 0;
    for s in config
        .sinks
        .iter()
        .filter(|s| matches!(s.kind, SinkKind::Webhook(_) | SinkKind::Nats(_)))
    {
        if let Err(e) = sinks::build(s) {
            eprintln!("error: {e}");
            bad += 1;
        }
    }
    if bad > 0 {
        return Ok(ExitCode::from(super::exit::CONFIG));
    }
    println!("secrets: all {} resolve", config.secrets().len());
    Ok(ExitCode::SUCCESS)
}

/// `  [shard K/N]` or `  [shard J/N: not polled here]` after a member, when sharded.
fn shard_note(shard: Shard, account: &str, member: &str) -> String {
    if !shard.is_sharded() {
        String::new()
    } else if shard.owns(account, member) {
        format!("  [shard {shard}: polled here]")
    } else {
        let n = shard.count();
        format!(
            "  [shard {}/{n}: not polled here]",
            crate::shard::owner(account, member, n)
        )
    }
}

fn print_sink(s: &crate::config::Sink) {
    println!("[[sinks]] {} ({})", s.name, s.kind.name());
    let list = |v: &[String]| {
        if v.is_empty() {
            "all".to_string()
        } else {
            v.join(", ")
        }
    };
    println!("  events           {}", list(&s.filter.events));
    println!("  accounts         {}", list(&s.filter.accounts));
    let delivery = match &s.kind {
        SinkKind::Jsonl(j) => {
            println!("  path             {}", j.path.display());
            println!("  mode             {:04o}", j.mode);
            if let Some(b) = j.rotate_bytes {
                println!(
                    "  rotate           at {b} bytes, keeping {} old files",
                    j.rotate_keep
                );
            }
            return;
        }
        SinkKind::Hook(h) => {
            println!("  command          {:?} (argv, no shell)", h.command);
            println!(
                "  stdin            {}",
                if h.stdin == crate::config::HookStdin::Payload {
                    "payload"
                } else {
                    "envelope"
                }
            );
            println!(
                "  env              PATH, HOME, LANG, TZ{}",
                h.env.iter().map(|e| format!(", {e}")).collect::<String>()
            );
            if let Some(w) = &h.workdir {
                println!("  workdir          {}", w.display());
            }
            println!("  timeout          {}", format_duration(h.timeout));
            &h.delivery
        }
        SinkKind::Webhook(w) => {
            println!("  url              {}", w.url);
            for sec in &w.secrets {
                println!("  secret           {}", sec.source.describe());
            }
            println!(
                "  timeout          {}, Retry-After capped at {}",
                format_duration(w.timeout),
                format_duration(w.retry_after_cap)
            );
            &w.delivery
        }
        SinkKind::Nats(n) => {
            println!("  servers          {}", n.servers.join(", "));
            println!(
                "  stream           {}{}",
                n.stream,
                if n.create_stream {
                    " (created if missing)"
                } else {
                    " (must exist)"
                }
            );
            println!(
                "  subject          {}  (e.g. {}; the stream must capture {})",
                n.subject,
                n.subject
                    .render("caminvoice", "acme-kh", "DOCUMENT.DELIVERED"),
                n.subject.pattern()
            );
            println!(
                "  body             {}",
                if n.body == crate::config::Body::Payload {
                    "payload"
                } else {
                    "envelope"
                }
            );
            println!("  auth             {}", n.auth.describe());
            if let Some(ca) = &n.tls_ca_file {
                println!("  tls_ca_file      {}", ca.display());
            }
            if let Some((cert, key)) = &n.tls_client {
                println!(
                    "  tls client cert  {} (key {})",
                    cert.display(),
                    key.display()
                );
            }
            println!(
                "  timeout          {} (PubAck and API requests)",
                format_duration(n.timeout)
            );
            &n.delivery
        }
    };
    let schedule: Vec<String> = delivery
        .retry_schedule
        .iter()
        .map(|d| format_duration(*d))
        .collect();
    println!(
        "  retries          [{}] then the last again, {} attempts, then a dead letter",
        schedule.join(", "),
        delivery.max_attempts
    );
    match delivery.ordering {
        DeliveryOrder::InOrder => println!("  ordering         in-order"),
        DeliveryOrder::PerDocument => println!(
            "  ordering         per-document, {} at once",
            delivery.concurrency
        ),
    }
}
