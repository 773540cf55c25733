//! Outside programs a test needs (systemd-analyze, nats-server, ...): found, version-checked,
//! or else a failure under CI and a visible skip elsewhere.
//!
//! The rule (issue 17): a test that lacks its component never passes by skipping in CI. With
//! `CI` set (`CI=true`, as `.ci/run` and most CI systems set it) a missing or too old tool is a
//! test failure that prints the install command; without it, the test is skipped and says so on
//! the terminal (written past libtest's capture, so a developer sees it even when the test
//! passes).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// An outside program a test needs.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    /// The program's file name, looked up on `PATH`, e.g. `"systemd-analyze"`.
    pub name: &'static str,
    /// Directories searched after `PATH` (`~/` is the home directory), e.g. `"/usr/sbin"` or
    /// `"~/.local/bin"` where `pip install --user` puts programs.
    pub also_in: &'static [&'static str],
    /// Arguments that make it print its version, e.g. `&["--version"]`.
    pub version_args: &'static [&'static str],
    /// The oldest version that works, dotted (`"250"`, `"2.10"`); `None` accepts any.
    pub min_version: Option<&'static str>,
    /// The command that installs a good enough version on a fresh Debian machine.
    pub install_hint: &'static str,
}

/// systemd's analyzer: `verify`, and `security --offline=true` (systemd 250 and later).
pub const SYSTEMD_ANALYZE: Tool = Tool {
    name: "systemd-analyze",
    also_in: &["/usr/bin", "/bin"],
    version_args: &["--version"],
    min_version: Some("250"),
    install_hint: "apt-get install systemd   (as root; Debian 12 ships systemd 252)",
};

/// Whether this run is a CI run: `CI` set to anything but empty, `0` or `false`.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"))
        .unwrap_or(false)
}

/// The tool's path, when it is installed in a good enough version. Otherwise: under CI a panic
/// naming the install command; elsewhere a "SKIPPED" line on the terminal and `None` (the
/// caller returns: the test is skipped, visibly).
pub fn require_tool(tool: &Tool) -> Option<PathBuf> {
    require_tool_in(tool, in_ci())
}

/// [`require_tool`] with the CI decision given.
pub fn require_tool_in(tool: &Tool, ci: bool) -> Option<PathBuf> {
    let why = match find(tool) {
        Ok(path) => return Some(path),
        Err(why) => why,
    };
    let msg = format!("{} {why}; install it: {}", tool.name, tool.install_hint);
    if ci {
        panic!("CI=true and a required tool is missing: {msg}");
    }
    // Straight to the terminal: libtest captures only print!/eprint!, and hides them for
    // passing tests.
    let _ = writeln!(std::io::stderr(), "SKIPPED ({}): {msg}", current_test());
    None
}

/// The path of a good enough `tool`, or why there is none.
fn find(tool: &Tool) -> Result<PathBuf, String> {
    let path = locate(tool).ok_or_else(|| {
        format!(
            "is not installed (searched PATH and {})",
            tool.also_in.join(", ")
        )
    })?;
    let Some(min) = tool.min_version else {
        return Ok(path);
    };
    let out = Command::new(&path)
        .args(tool.version_args)
        .output()
        .map_err(|e| format!("at {} cannot run: {e}", path.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let found = version_in(&text).ok_or_else(|| {
        format!(
            "at {} printed no version for `{}`: {:?}",
            path.display(),
            tool.version_args.join(" "),
            text.lines().next().unwrap_or("")
        )
    })?;
    let want = parse_version(min).expect("min_version is dotted numbers");
    if found < want {
        return Err(format!(
            "at {} is version {}, older than the {min} the tests need",
            path.display(),
            dotted(&found)
        ));
    }
    Ok(path)
}

fn locate(tool: &Tool) -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let extra = tool
        .also_in
        .iter()
        .filter_map(|d| match d.strip_prefix("~/") {
            Some(rest) => home.as_ref().map(|h| h.join(rest)),
            None => Some(PathBuf::from(d)),
        });
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(tool.name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The first version-looking word of a `--version` output: `systemd 252 (252.38-1)` → 252,
/// `nats-server: v2.10.22` → 2.10.22.
pub fn version_in(text: &str) -> Option<Vec<u64>> {
    text.split(|c: char| c.is_whitespace() || c == '(' || c == ',')
        .map(|w| w.trim_start_matches(['v', 'V']))
        .filter(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .find_map(|w| {
            let numeric: String = w
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            parse_version(numeric.trim_end_matches('.'))
        })
}

fn parse_version(s: &str) -> Option<Vec<u64>> {
    let parts: Option<Vec<u64>> = s.split('.').map(|p| p.parse().ok()).collect();
    parts.filter(|p| !p.is_empty())
}

fn dotted(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

fn current_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string()
}
