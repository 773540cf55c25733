//! `pollhook store verify|backup|restore|reset`: what an operator does with the state store.
//!
//! `verify` and `backup` work while the daemon runs (through its admin endpoint, which holds
//! the store); `restore` and `reset` replace the store and need the daemon stopped. Neither
//! deletes anything: the store they replace is moved into `<state_dir>/replaced-<time>/`.

use super::{run_err, Failure, StoreCommand};
use crate::config::{Config, SinkKind};
use crate::store::backup::{self, Carried, Current, Staged};
use crate::store::{Store, StoreError};
use crate::{admin, providers, sinks};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

pub(super) async fn run(command: StoreCommand) -> Result<ExitCode, Failure> {
    match command {
        StoreCommand::Verify { config } => verify(&config.load()?).await,
        StoreCommand::Backup { file, config } => backup(&config.load()?, &file).await,
        StoreCommand::Restore {
            file,
            config,
            force,
        } => restore(&config.load()?, &file, force),
        StoreCommand::Reset { config, yes } => reset(&config.load()?, yes),
    }
}

fn jsonl_sinks(config: &Config) -> impl Iterator<Item = (&str, &crate::config::JsonlSettings)> {
    config.sinks.iter().filter_map(|s| match &s.kind {
        SinkKind::Jsonl(j) => Some((s.name.as_str(), j)),
        _ => None,
    })
}

async fn verify(config: &Config) -> Result<ExitCode, Failure> {
    let check = providers::record_check(&config.accounts);
    let report = match Store::inspect(&config.daemon.state_dir) {
        Ok((store, problem)) => {
            let mut report = store.verify(problem, check).await.map_err(run_err)?;
            if let Err(why) = sinks::check_positions(&store, &config.sinks) {
                report.add_problem(why.to_string());
            }
            report
        }
        Err(StoreError::Locked(_)) => {
            let report = admin::fetch_verify(config).await.map_err(Failure::Run)?;
            eprintln!("(through the running daemon)");
            report
        }
        Err(e) => {
            println!("PROBLEM: {e}");
            return Ok(ExitCode::from(super::exit::FAILED));
        }
    };
    print!("{}", report.render());
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::exit::FAILED)
    })
}

/// Removes a temp file unless disarmed.
struct Temp(Option<std::path::PathBuf>);

impl Drop for Temp {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

async fn backup(config: &Config, file: &Path) -> Result<ExitCode, Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = crate::files::temp_beside(file);
    let out = std::fs::OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Failure::Run(format!("cannot write {}: {e}", tmp.display())))?;
    let mut guard = Temp(Some(tmp.clone()));
    let via = match Store::open(&config.daemon.state_dir) {
        Ok(store) => {
            store.backup(out).await.map_err(run_err)?;
            ""
        }
        Err(StoreError::Locked(_)) => {
            admin::fetch_backup(config, out)
                .await
                .map_err(Failure::Run)?;
            " through the running daemon"
        }
        Err(e) => {
            return Err(Failure::Run(format!(
                "{e}\n(a store that is refused cannot be backed up as a store; to keep its files, copy the state dir with `cp -a`)"
            )))
        }
    };
    // Read back whole before it takes the name: a backup that does not check is no backup.
    let summary = backup::check_file(&tmp).map_err(run_err)?;
    std::fs::rename(&tmp, file)
        .and_then(|_| crate::files::sync_parent(file))
        .map_err(|e| Failure::Run(format!("cannot write {}: {e}", file.display())))?;
    guard.0 = None;
    let h = &summary.header;
    println!("{}", file.display());
    eprintln!(
        "backup of store {} taken{via} at {}: {} records, events up to seq {}, {} bytes, checksum verified.\nIt holds the members' refresh tokens: keep it like the config's secrets (it is mode 0600).",
        h.store_id, h.created_at, summary.entries, h.last_seq, summary.bytes
    );
    Ok(ExitCode::SUCCESS)
}

fn restore(config: &Config, file: &Path, force: bool) -> Result<ExitCode, Failure> {
    let state_dir = &config.daemon.state_dir;
    let staged = Staged::load(state_dir, file).map_err(|e| match e {
        backup::BackupError::Store(s) => super::stopped_err(s, "restore"),
        other => run_err(other),
    })?;
    let h = staged.summary.header.clone();
    let b = h.last_seq;
    let origin = staged.origin().map_err(run_err)?;
    // Why the backup may be older than what sinks hold (needs --force), and what makes it the
    // wrong backup for these files altogether (refused).
    let mut older = Vec::new();
    let mut wrong = Vec::new();
    match staged.current() {
        Current::Missing => {}
        Current::Refused(why) => {
            eprintln!("the store there now is refused ({why}); it is kept aside")
        }
        Current::Sound { id, last_seq, acks } => {
            if *id != h.store_id {
                older.push(format!(
                    "the state dir holds store {id}; the backup is of store {}",
                    h.store_id
                ));
            }
            if *last_seq > b {
                older.push(format!(
                    "the store there has events up to seq {last_seq}; the backup ends at seq {b}"
                ));
            }
            for (sink, acked) in acks.iter().filter(|(_, a)| *a > b) {
                older.push(format!("sink {sink} has been delivered up to seq {acked}"));
            }
        }
    }
    let mut carried: BTreeMap<u64, Carried> = BTreeMap::new();
    for (name, j) in jsonl_sinks(config) {
        let after = sinks::jsonl::after(&j.path, b).map_err(|e| {
            Failure::Run(format!(
                "sink {name}: cannot read {}: {e}",
                j.path.display()
            ))
        })?;
        if let Some(t) = &after.boundary {
            if !origin.wrote(&t.id, t.seq).map_err(run_err)? {
                wrong.push(format!(
                    "sink {name}: {} holds event {} at seq {}, which the backup does not have there: the file was written with another store than this backup's",
                    t.file.display(),
                    t.id,
                    t.seq
                ));
            }
        }
        let Some(last) = after.lines.last() else {
            continue;
        };
        older.push(format!(
            "sink {name}: {} holds {} event(s) after the backup's last seq {b} (up to seq {})",
            j.path.display(),
            after.lines.len(),
            last.0
        ));
        if after.boundary.is_none() {
            older.push(format!(
                "sink {name}: none of its lines is at or before seq {b}, so its file cannot be matched with the backup"
            ));
        }
        for (seq, id, line) in after.lines {
            if let Some(at) = origin.seq_of(&id).map_err(run_err)? {
                wrong.push(format!(
                    "sink {name}: event {id} is at seq {seq} in the file but at seq {at} in the backup"
                ));
                continue;
            }
            match carried.get(&seq) {
                Some(c) if c.id != id => wrong.push(format!(
                    "sink {name}: seq {seq} is event {id} in its file but {} in another sink's",
                    c.id
                )),
                _ => {
                    carried.insert(seq, Carried { seq, id, line });
                }
            }
        }
    }
    eprintln!(
        "backup of store {} taken at {}: events up to seq {b}",
        h.store_id, h.created_at
    );
    if !wrong.is_empty() {
        for w in &wrong {
            eprintln!("  {w}");
        }
        return Err(Failure::Run(format!(
            "{} is not a backup of the store that wrote these sinks' files; nothing was restored. Restore the right backup, or move the files aside",
            file.display()
        )));
    }
    if !older.is_empty() && !force {
        for o in &older {
            eprintln!("  {o}");
        }
        return Err(Failure::Run(format!(
            "the backup is older than what the sinks already hold; nothing was restored.\nhelp: `pollhook store restore {} --force` restores it anyway: events the JSONL files hold after seq {b} are carried into the restored store (not written again); polling re-detects every later change under the same event ids, so nothing is lost; hook and webhook sinks get the events after their last acknowledgement in the backup again, with the same ids (consumers dedupe on id)",
            file.display()
        )));
    }
    drop(origin); // it holds the staged store open
    let carried: Vec<Carried> = carried.into_values().collect();
    staged.import(&carried).map_err(run_err)?;
    let aside = staged.install().map_err(run_err)?;
    // The restored store opens, and every sink's file belongs to it.
    let store = Store::open(state_dir).map_err(run_err)?;
    sinks::check_positions(&store, &config.sinks).map_err(run_err)?;
    println!(
        "restored store {} (events up to seq {})",
        store.id(),
        store.last_seq()
    );
    if !carried.is_empty() {
        eprintln!(
            "carried {} event(s) the JSONL files hold after the backup into the store: they are not written again",
            carried.len()
        );
    }
    if let Some(aside) = aside {
        eprintln!(
            "the store it replaced is in {} (delete it when you no longer need it)",
            aside.display()
        );
    }
    eprintln!("start the daemon: changes since the backup are polled again and emitted once, under the same event ids");
    Ok(ExitCode::SUCCESS)
}

fn reset(config: &Config, yes: bool) -> Result<ExitCode, Failure> {
    let state_dir = &config.daemon.state_dir;
    let mut tails = Vec::new();
    for (name, j) in jsonl_sinks(config) {
        let tail = sinks::jsonl::tail(&j.path, true).map_err(|e| {
            Failure::Run(format!(
                "sink {name}: cannot read {}: {e}",
                j.path.display()
            ))
        })?;
        if let Some(t) = tail {
            tails.push((name, t));
        }
    }
    let first = tails.iter().map(|(_, t)| t.seq).max().unwrap_or(0) + 1;
    let plan = format!(
        "`pollhook store reset` starts over: it moves the store in {} aside (into replaced-<time>/, nothing is deleted) and creates an empty one.\n  - its first cycle is a new baseline (start = {:?}): with \"now\", changes made since the old store's last cycle are NOT emitted; set start to an RFC 3339 instant to back-fill them (events already delivered then come again, with the same ids);\n  - hook and webhook sinks get the new store's events only;\n  - JSONL sinks continue their files: the new store's events start at seq {first}.",
        state_dir.display(),
        match config.daemon.start {
            crate::config::Start::Now => "now".to_string(),
            crate::config::Start::At(t) => crate::time::format_ms(t),
        }
    );
    if !yes {
        eprintln!(
            "{plan}\nNothing was changed. If that is what you want, run it again with --yes."
        );
        return Ok(ExitCode::from(super::exit::CONFIG));
    }
    let adopted: Vec<(String, u64)> = tails.iter().map(|(_, t)| (t.id.clone(), t.seq)).collect();
    let (store, aside) =
        Store::reset(state_dir, first, &adopted).map_err(|e| super::stopped_err(e, "reset"))?;
    match &aside {
        Some(a) => eprintln!(
            "the old store is in {} (delete it when you no longer need it)",
            a.display()
        ),
        None => eprintln!("there was no store to keep aside"),
    }
    for (name, t) in &tails {
        eprintln!(
            "sink {name}: {} continues after seq {} (event {})",
            t.file.display(),
            t.seq,
            t.id
        );
    }
    println!(
        "new store {}: its first event will be seq {first}",
        store.id()
    );
    Ok(ExitCode::SUCCESS)
}
