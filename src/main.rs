//! The `pollhook` binary: everything is in the library; see `cli`.

fn main() -> std::process::ExitCode {
    pollhook::cli::main()
}
