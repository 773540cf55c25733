//! `pollhook connect caminvoice`: the URL the business opens, or the exchange of the
//! authToken it was redirected with — in this process, or by the running daemon when it holds
//! the store. CamInvoice's side is `providers::caminvoice::connect`; this file only talks to
//! the operator.

use super::{init_logging, Failure};
use crate::admin;
use crate::cli::ConnectArgs;
use crate::providers::caminvoice::connect;
use crate::store::{Store, StoreError};
use std::process::ExitCode;

/// Runs `connect`.
pub(super) async fn run(args: ConnectArgs) -> Result<ExitCode, Failure> {
    let ConnectArgs {
        provider,
        config,
        account,
        print_url,
        redirect_url,
        state,
        auth_token,
    } = args;
    let config = config.load()?;
    if provider != "caminvoice" {
        return Err(Failure::Run(format!(
            "no connect flow for provider {provider:?}: only caminvoice has one"
        )));
    }
    init_logging("warn");
    connect::check_account(&config, &account).map_err(Failure::from)?;
    if print_url {
        let state = state.unwrap_or_else(connect::new_state);
        println!(
            "{}",
            connect::url(&config, &account, &redirect_url, &state).map_err(Failure::from)?
        );
        eprintln!(
            "Open this URL where the business signs in to CamInvoice and approves the connection."
        );
        eprintln!("The browser is then sent to {redirect_url}?authToken=...&state={state} (valid about 24 h). Copy that address and run:");
        eprintln!(
            "  pollhook connect caminvoice --config {} --account {account} --auth-token -   (paste it on stdin)",
            config.file.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let raw = match auth_token.as_deref() {
        Some("-") => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| Failure::Run(format!("cannot read the authToken from stdin: {e}")))?;
            line
        }
        Some(t) => t.to_string(),
        None => unreachable!("clap requires --auth-token without --print-url"),
    };
    let token = connect::auth_token_from(&raw).map_err(Failure::from)?;
    let connected = match Store::open(&config.daemon.state_dir) {
        Ok(store) => {
            let c = connect::exchange(&config, &account, &store, &token)
                .await
                .map_err(Failure::from)?;
            store.flush().await?;
            c
        }
        Err(StoreError::Locked(_)) => {
            eprintln!("the daemon holds the state store: handing the authToken to it");
            admin::post_connect(&config, &account, &token)
                .await
                .map_err(Failure::Run)?
        }
        Err(e) => return Err(e.into()),
    };
    println!("{}", connected.endpoint_id);
    eprintln!(
        "connected {}{} to account {}; its refresh token is in the state store{}. The next cycle polls it.",
        connected.endpoint_id,
        connected
            .company_name_en
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
        connected.account,
        if connected.in_config {
            " and takes precedence over the config's until you change that refresh_token"
        } else {
            ""
        }
    );
    let shard = config.daemon.shard;
    if !shard.owns(&connected.account, &connected.endpoint_id) {
        eprintln!(
            "warning: this daemon is shard {shard}, and {} belongs to shard {}/{}: this one will not poll it, and that one cannot read this store. Have the business connect again through that shard (`pollhook connect caminvoice --print-url` with its config; an authToken works once), or put a refresh_token for it in the config every shard shares (SCALING.md)",
            connected.endpoint_id,
            crate::shard::owner(&connected.account, &connected.endpoint_id, shard.count()),
            shard.count()
        );
    }
    Ok(ExitCode::SUCCESS)
}
