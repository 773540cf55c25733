//! TEMPORARY stub.
pub async fn run(_d: std::time::Duration, _s: u64) -> Result<(), String> {
    Ok(())
}
