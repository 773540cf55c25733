//! The `pollhook` binary: everything is in the library; see `cli`.

fn main() -> std::process::ExitCode {
    pollhook::memory::limit_arenas();
    pollhook::cli::main()
}
