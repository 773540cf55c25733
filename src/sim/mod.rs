//! TEMPORARY stub until the simulator lands.
#[derive(Default)]
pub struct SimConfig {
    pub seed: u64,
}
pub async fn run_standalone(
    _l: std::net::SocketAddr,
    _c: SimConfig,
    _s: Option<std::time::Duration>,
) -> std::io::Result<()> {
    Ok(())
}
