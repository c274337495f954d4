//! The `prodhcp` Debian package, installed for real with dpkg (issue 11): files, owners and
//! modes; `prodhcpd --check-config` on the shipped configuration (as root and as the daemon's
//! user); an upgrade to a rebuilt higher version keeps an edited conffile and leaves the state
//! directory alone; remove keeps state and configuration; purge removes them. Also: the .rpm
//! lists the same files (`rpm -qlp`; no rpm install on Debian).
//!
//! Needs root, dpkg, and the packages in target/packages (scripts/test.sh's package step runs
//! packaging/build.sh first). Skips, saying why, without them, and when a `prodhcp` package
//! or its directories are already on this machine: an operator's install is never touched.
//! Whatever happens, the package is purged at the end (a guard), and the prodhcp user it
//! created is deleted.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use prodhcp_systests::lab::run_bounded;
use prodhcp_systests::{on_path, SKIP_ENV};

const TEST: &str = "package_deb";
/// dpkg runs maintainer scripts and man-db's trigger: generous, but bounded.
const DPKG_TIMEOUT: Duration = Duration::from_secs(300);
const STATE: &str = "/var/lib/prodhcp";
const LOGS: &str = "/var/log/prodhcp";
const ETC: &str = "/etc/prodhcp";
const CONFIG: &str = "/etc/prodhcp/prodhcp.ron";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn skip(reason: &str) {
    eprintln!("SKIPPED {TEST}: {reason}");
}

fn text(o: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[track_caller]
fn run_ok(cmd: &[&str]) -> String {
    let o = run_bounded(cmd, DPKG_TIMEOUT);
    assert!(o.status.success(), "{} failed: {}", cmd.join(" "), text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// dpkg's view of `pkg`: its status line ("install ok installed", "deinstall ok
/// config-files"), or None when dpkg does not know it.
fn dpkg_status(pkg: &str) -> Option<String> {
    let o = run_bounded(
        &["dpkg-query", "-W", "-f=${Status}", pkg],
        Duration::from_secs(30),
    );
    let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
    (o.status.success() && !s.is_empty() && s != "unknown ok not-installed").then_some(s)
}

fn user_exists(name: &str) -> bool {
    run_bounded(&["getent", "passwd", name], Duration::from_secs(10))
        .status
        .success()
}

fn id_of(kind: &str, name: &str) -> u32 {
    let line = run_ok(&["getent", kind, name]);
    line.split(':')
        .nth(2)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("getent {kind} {name}: {line}"))
}

/// Asserts type, owner, group and mode of `path`.
#[track_caller]
fn check(path: &str, dir: bool, uid: u32, gid: u32, mode: u32) {
    let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(m.is_dir(), dir, "{path}: directory? {}", m.is_dir());
    if !dir {
        assert!(m.is_file(), "{path}: not a regular file");
    }
    assert_eq!(
        (m.uid(), m.gid(), m.permissions().mode() & 0o7777),
        (uid, gid, mode),
        "{path}: (uid, gid, mode) as {:o}",
        m.permissions().mode() & 0o7777
    );
}

/// Purges the package and deletes what the test created, whatever happened before.
struct Guard {
    user_existed: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if dpkg_status("prodhcp").is_some() {
            let o = run_bounded(&["dpkg", "--purge", "prodhcp"], DPKG_TIMEOUT);
            if !o.status.success() {
                eprintln!("{TEST}: cleanup: dpkg --purge prodhcp failed: {}", text(&o));
            }
        }
        // They did not exist before the test (checked): whatever is left is ours.
        for d in [STATE, LOGS, ETC] {
            if Path::new(d).exists() {
                eprintln!("{TEST}: cleanup: removing leftover {d}");
                let _ = fs::remove_dir_all(d);
            }
        }
        if !self.user_existed && user_exists("prodhcp") {
            let _ = run_bounded(&["userdel", "prodhcp"], Duration::from_secs(30));
            let _ = run_bounded(&["groupdel", "prodhcp"], Duration::from_secs(30));
        }
    }
}

/// The newest `prodhcp_*.deb` (and its `.rpm`) in target/packages.
fn find_packages(dir: &Path) -> (Option<PathBuf>, Option<PathBuf>) {
    let mut debs = Vec::new();
    let mut rpms = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("prodhcp_") && name.ends_with(".deb") {
            debs.push(e.path());
        } else if name.starts_with("prodhcp-")
            && !name.starts_with("prodhcp-tools")
            && name.ends_with(".rpm")
        {
            rpms.push(e.path());
        }
    }
    debs.sort();
    rpms.sort();
    (debs.pop(), rpms.pop())
}

#[test]
fn deb_install_upgrade_remove_purge() {
    if std::env::var_os(SKIP_ENV).is_some_and(|v| v == "1") {
        return skip(&format!("{SKIP_ENV}=1"));
    }
    if !nix::unistd::geteuid().is_root() {
        return skip("needs root (dpkg -i)");
    }
    for p in [
        "dpkg",
        "dpkg-deb",
        "dpkg-query",
        "getent",
        "runuser",
        "userdel",
    ] {
        if !on_path(p) {
            return skip(&format!("`{p}` is not installed (not a Debian machine?)"));
        }
    }
    let root = workspace();
    let (deb, rpm) = find_packages(&root.join("target/packages"));
    let Some(deb) = deb else {
        return skip("no prodhcp_*.deb in target/packages (run packaging/build.sh first; scripts/test.sh's package step does)");
    };
    if let Some(status) = dpkg_status("prodhcp") {
        return skip(&format!(
            "a prodhcp package is already on this machine ({status}): not touching it"
        ));
    }
    for d in [STATE, LOGS, ETC, "/usr/sbin/prodhcpd"] {
        if Path::new(d).exists() {
            return skip(&format!(
                "{d} exists (a prodhcp installed by hand?): not touching it"
            ));
        }
    }
    let _guard = Guard {
        user_existed: user_exists("prodhcp"),
    };
    let deb = deb.to_string_lossy().into_owned();

    // --- install ------------------------------------------------------------------------
    run_ok(&["dpkg", "--install", &deb]);
    assert_eq!(
        dpkg_status("prodhcp").as_deref(),
        Some("install ok installed")
    );
    let version = run_ok(&["dpkg-query", "-W", "-f=${Version}", "prodhcp"]);
    let uid = id_of("passwd", "prodhcp");
    let gid = id_of("group", "prodhcp");
    assert!(uid > 0 && uid < 1000, "prodhcp is a system user: uid {uid}");
    let pw = run_ok(&["getent", "passwd", "prodhcp"]);
    assert!(pw.trim_end().ends_with(":/usr/sbin/nologin"), "{pw}");

    check("/usr/sbin/prodhcpd", false, 0, 0, 0o755);
    check("/usr/sbin/prodhcpctl", false, 0, 0, 0o755);
    check(CONFIG, false, 0, gid, 0o640);
    check(STATE, true, uid, gid, 0o750);
    check(LOGS, true, uid, gid, 0o750);
    check(
        "/usr/lib/systemd/system/prodhcpd.service",
        false,
        0,
        0,
        0o644,
    );
    for f in [
        "/usr/share/man/man8/prodhcpd.8.gz",
        "/usr/share/man/man8/prodhcpctl.8.gz",
        "/usr/share/man/man8/prodhcpctl-status.8.gz",
        "/usr/share/man/man5/prodhcp.ron.5.gz",
        "/usr/share/bash-completion/completions/prodhcpd",
        "/usr/share/bash-completion/completions/prodhcpctl",
        "/usr/share/zsh/vendor-completions/_prodhcpctl",
        "/usr/share/fish/vendor_completions.d/prodhcpctl.fish",
        "/usr/share/doc/prodhcp/examples/prodhcp.ron",
        "/usr/share/doc/prodhcp/examples/rsyslog/30-prodhcp.conf",
        "/usr/share/doc/prodhcp/copyright",
        "/usr/lib/sysusers.d/prodhcp.conf",
        "/etc/logrotate.d/prodhcp",
    ] {
        check(f, false, 0, 0, 0o644);
    }
    let unit = fs::read_to_string("/usr/lib/systemd/system/prodhcpd.service").expect("unit");
    for line in [
        "User=prodhcp",
        "Type=notify",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit lacks {line}");
    }
    let conffiles = run_ok(&["dpkg-query", "-W", "-f=${Conffiles}", "prodhcp"]);
    for f in [CONFIG, "/etc/logrotate.d/prodhcp"] {
        assert!(
            conffiles.contains(&format!("{f} ")),
            "{f} is not a conffile: {conffiles}"
        );
    }
    // The shipped configuration is valid, and readable by the daemon's user.
    let out = run_ok(&["/usr/sbin/prodhcpd", "--config", CONFIG, "--check-config"]);
    assert!(out.contains(": OK ("), "{out}");
    let out = run_ok(&[
        "runuser",
        "-u",
        "prodhcp",
        "--",
        "/usr/sbin/prodhcpd",
        "--config",
        CONFIG,
        "--check-config",
    ]);
    assert!(out.contains(": OK ("), "{out}");
    // It is the serving-nothing default: no interfaces, no pools.
    let shipped = fs::read_to_string(CONFIG).expect("config");
    assert!(shipped.contains("interfaces: [],") && shipped.contains("pools: [],"));

    // --- state and an edited conffile -------------------------------------------------------
    let marker = format!("{STATE}/package-test-marker");
    fs::write(&marker, "lease table stand-in\n").expect("marker");
    let marker_ino = fs::metadata(&marker).expect("marker").ino();
    let state_ino = fs::metadata(STATE).expect("state").ino();
    let edited = format!("{shipped}// edited by the package_deb test\n");
    fs::write(CONFIG, &edited).expect("edit config");
    run_ok(&["/usr/sbin/prodhcpd", "--config", CONFIG, "--check-config"]);

    // --- upgrade to a rebuilt higher version (packaging only, no compile) ----------------
    let upstream = version.rsplit_once('-').map_or(&*version, |(u, _)| u);
    let newer = format!("{upstream}+upgradetest");
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().to_string_lossy().into_owned();
    let build = root.join("packaging/build.sh");
    run_ok(&[
        &build.to_string_lossy(),
        "--version",
        &newer,
        "--no-build",
        "--out",
        &out_dir,
    ]);
    let (newer_deb, _) = find_packages(dir.path());
    let newer_deb = newer_deb.expect("build.sh made no prodhcp .deb");
    let o = run_bounded(
        &["dpkg", "--install", &newer_deb.to_string_lossy()],
        DPKG_TIMEOUT,
    );
    assert!(o.status.success(), "upgrade: {}", text(&o));
    assert_eq!(
        run_ok(&["dpkg-query", "-W", "-f=${Version}", "prodhcp"]),
        format!("{newer}-1")
    );
    assert_eq!(
        fs::read_to_string(CONFIG).expect("config"),
        edited,
        "the edited conffile was not kept"
    );
    assert!(!Path::new(&format!("{CONFIG}.dpkg-new")).exists());
    check(CONFIG, false, 0, gid, 0o640);
    check(STATE, true, uid, gid, 0o750);
    assert_eq!(fs::metadata(STATE).expect("state").ino(), state_ino);
    assert_eq!(fs::metadata(&marker).expect("marker").ino(), marker_ino);
    assert_eq!(
        fs::read_to_string(&marker).expect("marker"),
        "lease table stand-in\n"
    );
    check("/usr/sbin/prodhcpd", false, 0, 0, 0o755);

    // --- remove: binaries go, configuration and state stay ------------------------------------
    run_ok(&["dpkg", "--remove", "prodhcp"]);
    assert_eq!(
        dpkg_status("prodhcp").as_deref(),
        Some("deinstall ok config-files")
    );
    assert!(!Path::new("/usr/sbin/prodhcpd").exists());
    assert!(!Path::new("/usr/sbin/prodhcpctl").exists());
    assert!(!Path::new("/usr/lib/systemd/system/prodhcpd.service").exists());
    assert_eq!(fs::read_to_string(CONFIG).expect("config kept"), edited);
    assert_eq!(
        fs::read_to_string(&marker).expect("state kept"),
        "lease table stand-in\n"
    );
    assert!(Path::new(LOGS).is_dir());

    // --- purge: configuration, state and logs go -----------------------------------------
    run_ok(&["dpkg", "--purge", "prodhcp"]);
    assert_eq!(dpkg_status("prodhcp"), None);
    for d in [ETC, STATE, LOGS] {
        assert!(!Path::new(d).exists(), "{d} survived the purge");
    }

    // --- the .rpm has the same files ------------------------------------------------------
    match rpm {
        Some(rpm) if on_path("rpm") => {
            let deb_files = deb_list(&deb);
            let rpm_files = rpm_list(&rpm.to_string_lossy());
            assert_eq!(
                rpm_files,
                deb_files,
                "rpm -qlp and dpkg -c differ (rpm only: {:?}; deb only: {:?})",
                rpm_files.difference(&deb_files).collect::<Vec<_>>(),
                deb_files.difference(&rpm_files).collect::<Vec<_>>()
            );
            eprintln!(
                "{TEST}: the .rpm and the .deb hold the same {} files",
                rpm_files.len()
            );
        }
        Some(_) => eprintln!("{TEST}: `rpm` not installed: .rpm file list not compared"),
        None => eprintln!("{TEST}: no prodhcp .rpm in target/packages: file list not compared"),
    }
}

/// The files (not directories) of a .deb, without what only a Debian package has (copyright
/// file and Debian changelog).
fn deb_list(deb: &str) -> BTreeSet<String> {
    run_ok(&["dpkg-deb", "--contents", deb])
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.').to_string())
        .filter(|p| {
            p != "/usr/share/doc/prodhcp/copyright"
                && p != "/usr/share/doc/prodhcp/changelog.Debian.gz"
        })
        .collect()
}

/// The files of an .rpm, with Fedora's zsh completions directory mapped to Debian's.
fn rpm_list(rpm: &str) -> BTreeSet<String> {
    run_ok(&["rpm", "-qlp", rpm])
        .lines()
        .map(|p| {
            p.replace(
                "/usr/share/zsh/site-functions/",
                "/usr/share/zsh/vendor-completions/",
            )
        })
        .collect()
}
