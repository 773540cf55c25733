//! `pollhook events list|replay|tail`: the outbox with each sink's state, re-delivery through
//! a sink's endpoint (acks untouched), and following a JSONL sink's file.

use super::{find_sink, init_logging, open_stopped, run_err, Failure};
use crate::cli::EventsCommand;
use crate::config::{Config, SinkKind};
use crate::sinks;
use crate::store::Store;
use crate::time::format_ms;
use std::process::ExitCode;

pub(super) async fn run(command: EventsCommand) -> Result<ExitCode, Failure> {
    match command {
        EventsCommand::List {
            config,
            sink,
            dead,
            limit,
        } => {
            let config = config.load()?;
            if let Some(name) = &sink {
                find_sink(&config, name)?;
            }
            let store = open_stopped(&config, "list events")?;
            if dead {
                list_dead(&store, sink.as_deref(), limit)?;
            } else {
                list_events(&store, &config, sink.as_deref(), limit)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        EventsCommand::Replay {
            config,
            sink,
            since,
            id,
            dead,
        } => {
            let config = config.load()?;
            init_logging("warn");
            let selection = match (since, id, dead) {
                (Some(t), None, false) => sinks::replay::Selection::Since(t),
                (None, Some(id), false) => sinks::replay::Selection::Id(id),
                (None, None, true) => sinks::replay::Selection::Dead,
                _ => {
                    return Err(Failure::Run(
                        "say which events: --since RFC3339, --id EVT or --dead".into(),
                    ))
                }
            };
            let runner = sinks::build(find_sink(&config, &sink)?).map_err(run_err)?;
            let store = open_stopped(&config, "replay events")?;
            let report = sinks::replay::replay(&store, &runner, selection)
                .await
                .map_err(run_err)?;
            for e in &report.events {
                match &e.error {
                    None => println!("seq {} {} delivered", e.seq, e.id),
                    Some(err) => println!("seq {} {} FAILED: {err}", e.seq, e.id),
                }
            }
            if report.filtered > 0 {
                println!(
                    "{} event(s) in range skipped by the sink's events/accounts filter",
                    report.filtered
                );
            }
            if let Some(oldest) = report.oldest.filter(|o| *o > 1) {
                println!("(the outbox starts at seq {oldest}: older events were pruned after `retention`)");
            }
            let failed = report.failed();
            println!(
                "replayed {} event(s) to sink {sink}: {} delivered, {failed} failed",
                report.events.len(),
                report.events.len() - failed
            );
            Ok(if failed > 0 {
                ExitCode::from(super::exit::FAILED)
            } else {
                ExitCode::SUCCESS
            })
        }
        EventsCommand::Tail {
            config,
            sink,
            lines,
        } => {
            let config = config.load()?;
            let jsonl = config.sinks.iter().filter_map(|s| match &s.kind {
                SinkKind::Jsonl(j) if sink.as_ref().map_or(true, |n| *n == s.name) => Some(j),
                _ => None,
            });
            let Some(j) = jsonl.into_iter().next() else {
                return Err(Failure::Run(match sink {
                    Some(n) => format!("{n:?} is not a jsonl sink of this config; `events tail` follows a JSONL sink's file"),
                    None => "`events tail` follows a JSONL sink's file and this config has none; add [[sinks]] kind = \"jsonl\" (the store itself cannot be read while the daemon runs)".into(),
                }));
            };
            let mut out = std::io::stdout();
            let stop = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            sinks::tail::follow(&j.path, lines, &mut out, stop)
                .await
                .map_err(|e| Failure::Run(format!("following {}: {e}", j.path.display())))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn list_dead(store: &Store, sink: Option<&str>, limit: usize) -> Result<(), Failure> {
    let dead = store.dead_letters(sink).map_err(run_err)?;
    if dead.is_empty() {
        println!("no dead letters");
        return Ok(());
    }
    let skip = dead.len().saturating_sub(limit);
    for d in &dead[skip..] {
        let env = d.event.envelope().map_err(run_err)?;
        println!(
            "{}  seq {}  {}  {}  {}  attempts {}  at {}\n    error: {}",
            d.sink,
            d.event.seq,
            env.id,
            env.event_type,
            env.account,
            d.attempts,
            format_ms(d.at),
            d.error
        );
    }
    println!(
        "{} dead letter(s); `pollhook events replay --sink NAME --dead` re-delivers them",
        dead.len()
    );
    Ok(())
}

fn list_events(
    store: &Store,
    config: &Config,
    sink: Option<&str>,
    limit: usize,
) -> Result<(), Failure> {
    let last = store.last_seq();
    let from = last.saturating_sub(limit as u64);
    let events = store.read_outbox(from, limit).map_err(run_err)?;
    let sinks: Vec<&crate::config::Sink> = config
        .sinks
        .iter()
        .filter(|s| sink.map_or(true, |n| n == s.name))
        .collect();
    let mut acks = Vec::new();
    for s in &sinks {
        let dead: std::collections::HashSet<u64> = store
            .dead_letters(Some(&s.name))
            .map_err(run_err)?
            .iter()
            .map(|d| d.event.seq)
            .collect();
        acks.push((s, store.acked(&s.name).map_err(run_err)?, dead));
    }
    let mut rows = Vec::with_capacity(events.len());
    for e in &events {
        let env = e.envelope().map_err(run_err)?;
        let mut states = Vec::new();
        for (s, acked, dead) in &acks {
            let state = if dead.contains(&e.seq) {
                "dead".to_string()
            } else if !s.filter.matches(&env.event_type, &env.account) {
                "filtered".to_string()
            } else if e.seq <= *acked {
                "delivered".to_string()
            } else {
                match store.attempts(&s.name, e.seq).map_err(run_err)? {
                    Some(a) => format!("retrying ({} failed)", a.count),
                    None => "pending".to_string(),
                }
            };
            states.push(format!("{}={state}", s.name));
        }
        rows.push((e.seq, env, states.join(" ")));
    }
    if !rows.is_empty() {
        let width = rows
            .iter()
            .map(|(_, env, _)| env.account.len())
            .max()
            .unwrap_or(0)
            .max("ACCOUNT".len());
        println!(
            "{:>6}  {:<24}  {:<36}  {:<24}  {:<width$}  SINK=STATE",
            "SEQ", "DETECTED", "EVENT ID", "TYPE", "ACCOUNT"
        );
        for (seq, env, states) in rows {
            println!(
                "{seq:>6}  {:<24}  {:<36}  {:<24}  {:<width$}  {states}",
                env.detected_at, env.id, env.event_type, env.account
            );
        }
    }
    match store.first_seq().map_err(run_err)? {
        None => println!("the outbox is empty"),
        Some(first) => {
            println!("outbox: seq {first}..{last} (older events are pruned after `retention`)")
        }
    }
    Ok(())
}
