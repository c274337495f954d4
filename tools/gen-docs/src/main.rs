//! `gen-docs OUT_DIR [CONFIG_EXAMPLE]`: writes what the packages ship besides the binaries:
//!
//! - `OUT_DIR/man/` prodhcpd.8, prodhcpctl.8 and one prodhcpctl-SUBCOMMAND.8 per subcommand,
//!   dhcpperf.1 and dhcpperf-SUBCOMMAND.1, from the clap definitions (clap_mangen), and
//!   prodhcp.ron.5 from the annotated example configuration (default `etc/prodhcp.ron`):
//!   its comments are the documentation of each field;
//! - `OUT_DIR/completions/{bash,zsh,fish}/` completions for the three programs (clap_complete),
//!   named as bash-completion (`prodhcpd`), zsh (`_prodhcpd`) and fish (`prodhcpd.fish`) load
//!   them.
//!
//! Run by packaging/build.sh; not shipped. The clap definitions are the ones the binaries
//! parse with (`prodhcp_supervisor::cli`, `prodhcp_ctl::cli`, `dhcpperf::cli`), so the pages
//! cannot drift from `--help`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Command, CommandFactory};
use clap_complete::Shell;

mod ron_page;

/// The manual's name in each page's title line.
const MANUAL: &str = "prodhcp";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(out) = args.next().map(PathBuf::from) else {
        eprintln!("usage: gen-docs OUT_DIR [CONFIG_EXAMPLE]");
        return ExitCode::from(2);
    };
    let example = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("etc/prodhcp.ron"));
    match run(&out, &example) {
        Ok(n) => {
            println!("gen-docs: {n} files written under {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen-docs: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The three programs: command, man section, sections appended after clap's.
fn programs() -> Vec<(Command, &'static str, Vec<Extra>)> {
    vec![
        (
            prodhcp_supervisor::cli::Args::command(),
            "8",
            vec![
                Extra::new(
                    "EXIT STATUS",
                    &[
                        "0 clean stop (or a valid configuration with --check-config, a clean table with --check-table).",
                        "1 runtime failure (the systemd unit restarts it).",
                        "2 bad configuration or usage (not restarted: it needs an operator).",
                        "3 lease table unusable: corrupt, truncated, locked by another prodhcpd, unsafe permissions (not restarted).",
                    ],
                ),
                Extra::new(
                    "SIGNALS",
                    &[
                        "SIGHUP re-reads the configuration file (systemctl reload prodhcpd); a file that does not validate is refused and the running configuration stays in force.",
                        "SIGTERM and SIGINT stop the workers and mark the lease table clean.",
                    ],
                ),
                Extra::new(
                    "FILES",
                    &[
                        "/etc/prodhcp/prodhcp.ron: the configuration, see prodhcp.ron(5); an annotated example of every field is /usr/share/doc/prodhcp/examples/prodhcp.ron.",
                        "/var/lib/prodhcp/leases.table: the memory-mapped lease table (state_dir).",
                        "/run/prodhcp/control.sock: the control socket prodhcpctl(8) connects to.",
                        "/var/log/prodhcp/: the audit trail's JSON-lines file when configured.",
                        "/lib/systemd/system/prodhcpd.service: the systemd unit (runs as the prodhcp user with CAP_NET_BIND_SERVICE, CAP_NET_RAW and CAP_NET_ADMIN only).",
                    ],
                ),
                Extra::new("SEE ALSO", &["prodhcpctl(8), prodhcp.ron(5), dhcpperf(1)"]),
            ],
        ),
        (
            prodhcp_ctl::cli::Cli::command(),
            "8",
            vec![
                Extra::new(
                    "FILES",
                    &["/run/prodhcp/control.sock: prodhcpd's control socket (--socket); its directory is open to root and the prodhcp group."],
                ),
                Extra::new(
                    "SEE ALSO",
                    &["prodhcpd(8), prodhcp.ron(5); each subcommand has its own page, e.g. prodhcpctl-status(8)."],
                ),
            ],
        ),
        (
            dhcpperf::cli::Cli::command(),
            "1",
            vec![Extra::new(
                "SEE ALSO",
                &["prodhcpd(8); each subcommand has its own page, e.g. dhcpperf-dora(1). Generate load only against servers and networks you run: dhcpperf sends as fast as it is told to."],
            )],
        ),
    ]
}

/// A section appended after clap_mangen's: a title and its paragraphs (plain text).
struct Extra {
    title: &'static str,
    paragraphs: Vec<&'static str>,
}

impl Extra {
    fn new(title: &'static str, paragraphs: &[&'static str]) -> Self {
        Self {
            title,
            paragraphs: paragraphs.to_vec(),
        }
    }
}

fn run(out: &Path, example: &Path) -> Result<usize, String> {
    let man = out.join("man");
    fs::create_dir_all(&man).map_err(|e| format!("{}: {e}", man.display()))?;
    let mut written = 0;
    for (cmd, section, extras) in programs() {
        // `help` as a subcommand is clap's own (the same as --help): no page, no completion.
        let mut cmd = cmd.disable_help_subcommand(true);
        cmd.build();
        written += man_pages(&cmd, section, &extras, &man, true)?;
        let name = cmd.get_name().to_string();
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let dir = out.join("completions").join(shell.to_string());
            fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let file = dir.join(match shell {
                Shell::Bash => name.clone(),
                Shell::Zsh => format!("_{name}"),
                _ => format!("{name}.fish"),
            });
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), &name, &mut buf);
            fs::write(&file, buf).map_err(|e| format!("{}: {e}", file.display()))?;
            written += 1;
        }
    }
    let text = fs::read_to_string(example).map_err(|e| format!("{}: {e}", example.display()))?;
    let page = ron_page::render(&text, env!("CARGO_PKG_VERSION"));
    let file = man.join("prodhcp.ron.5");
    fs::write(&file, page).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(written + 1)
}

/// Writes the page of `cmd` and, recursively, of each visible subcommand (as
/// `parent-sub.SECTION`, the way clap_mangen names them). The extra sections go on the top
/// page only.
fn man_pages(
    cmd: &Command,
    section: &str,
    extras: &[Extra],
    dir: &Path,
    top: bool,
) -> Result<usize, String> {
    let mut n = 0;
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        n += man_pages(sub, section, &[], dir, false)?;
    }
    let title = cmd
        .get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string();
    let page = clap_mangen::Man::new(cmd.clone())
        .title(title.clone())
        .section(section)
        .source(format!("prodhcp {}", env!("CARGO_PKG_VERSION")))
        .manual(MANUAL);
    let mut buf = Vec::new();
    page.render(&mut buf)
        .map_err(|e| format!("rendering {title}: {e}"))?;
    for extra in if top { extras } else { &[] } {
        writeln!(buf, ".SH \"{}\"", extra.title).map_err(|e| e.to_string())?;
        for p in &extra.paragraphs {
            writeln!(buf, ".PP\n{}", ron_page::escape(p)).map_err(|e| e.to_string())?;
        }
    }
    let file = dir.join(format!("{title}.{section}"));
    fs::write(&file, buf).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(n + 1)
}
