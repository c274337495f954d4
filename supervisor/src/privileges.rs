//! Least privilege: the `user` the supervisor drops to when started as root, and the
//! capabilities each process keeps (RELIABILITY.md F1).
//!
//! Started as root with `user` set, the supervisor opens, creates or migrates the lease table
//! and its rings as root, gives the directories it writes later to the user ([`apply`]), then
//! drops: the bounding set is reduced to [`SERVICE_CAPS`] (while it still has CAP_SETPCAP),
//! groups, gid and uid become the user's with `PR_SET_KEEPCAPS`, and the three capabilities
//! are put back as permitted, inheritable and ambient (effective: CAP_NET_BIND_SERVICE only,
//! the one the supervisor itself uses, to bind more port-67 sockets when a reload adds
//! workers), with `no_new_privs`. Everything after (the UDP sockets, the control socket, every
//! child) is done as the user: the kernel lets a socket join a SO_REUSEPORT group only when
//! it was made by the same user as those already in it, so the sockets are made after the drop.
//!
//! The ambient set is what a child gets at exec (its binary has no file capabilities); each
//! child then narrows its own sets first thing ([`enter_child`], [`Role::keeps`]): a worker
//! keeps CAP_NET_BIND_SERVICE and CAP_NET_RAW, syncd the three (service address through
//! netlink, gratuitous ARP on a packet socket, its listener on port 647), the audit process
//! none. Under systemd (`User=prodhcp`, `AmbientCapabilities=`) the supervisor starts as the
//! user with those capabilities already: the drop is then a no-op, and the narrowing the same.
//!
//! Started as root without `user`, nothing changes (a warning says it runs as root).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Uid};
use prodhcp_config::Config;
use tracing::{info, warn};

use crate::error::exit;

/// The capabilities the service needs at most: CAP_NET_BIND_SERVICE (port 67, syncd's 647),
/// CAP_NET_RAW (gratuitous ARP), CAP_NET_ADMIN (the cluster's service address).
pub const SERVICE_CAPS: [Capability; 3] = [
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_NET_RAW,
    Capability::CAP_NET_ADMIN,
];

/// A process of prodhcp, for the capabilities it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The supervisor: keeps [`SERVICE_CAPS`] to hand them on, uses only
    /// CAP_NET_BIND_SERVICE.
    Supervisor,
    /// A worker: serves on the port-67 socket the supervisor made.
    Worker,
    /// The replication daemon: service address, gratuitous ARP, its own listener.
    Syncd,
    /// The audit process: files and outgoing connections only.
    Audit,
}

impl Role {
    /// The capabilities the process keeps as permitted, inheritable and ambient.
    pub fn keeps(self) -> &'static [Capability] {
        match self {
            Role::Supervisor | Role::Syncd => &SERVICE_CAPS,
            Role::Worker => &[Capability::CAP_NET_BIND_SERVICE, Capability::CAP_NET_RAW],
            Role::Audit => &[],
        }
    }

    /// The capabilities the process keeps effective.
    pub fn effective(self) -> &'static [Capability] {
        match self {
            Role::Supervisor => &[Capability::CAP_NET_BIND_SERVICE],
            r => r.keeps(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Role::Supervisor => "supervisor",
            Role::Worker => "worker",
            Role::Syncd => "syncd",
            Role::Audit => "audit",
        }
    }
}

/// Why the privileges could not be set up as configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrivilegeError {
    /// The configured user does not exist.
    #[error("user `{0}` (the `user` field) does not exist on this system: create it (e.g. `adduser --system --group {0}`) or leave `user` out")]
    UnknownUser(String),
    /// The user database could not be read.
    #[error("looking up user `{user}`: {source}")]
    Lookup {
        /// The configured user.
        user: String,
        /// What the C library said.
        #[source]
        source: nix::Error,
    },
    /// Started as a user that is neither root nor the configured one.
    #[error("prodhcpd runs as uid {uid}, neither root nor the configured user `{user}` (uid {want}): start it as root (it then drops to `{user}`) or as `{user}`")]
    WrongUser {
        /// Our effective uid.
        uid: u32,
        /// The configured user.
        user: String,
        /// Its uid.
        want: u32,
    },
    /// A directory prodhcpd would have to give to the user is a system directory.
    #[error("{} ({what}) is a system directory, which prodhcpd does not give to user `{user}`: use a directory of its own (such as /var/lib/prodhcp or /run/prodhcp)", path.display())]
    SystemDirectory {
        /// The directory.
        path: PathBuf,
        /// Which setting names it.
        what: &'static str,
        /// The configured user.
        user: String,
    },
    /// A file or directory could not be created or given to the user.
    #[error("preparing {} for user `{user}`: {source}", path.display())]
    Prepare {
        /// The file or directory.
        path: PathBuf,
        /// The configured user.
        user: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A step of the drop itself failed.
    #[error("dropping privileges to user `{user}`: {step}: {message}")]
    Drop {
        /// The configured user.
        user: String,
        /// The step (setgroups, setuid, ambient set …).
        step: &'static str,
        /// What failed.
        message: String,
    },
    /// After the drop, a file the service reads later is not readable by the user.
    #[error("as user `{user}`, {} ({what}) cannot be {how}: {source}; give the user access to it", path.display())]
    NoAccess {
        /// The configured user.
        user: String,
        /// The file.
        path: PathBuf,
        /// What it is.
        what: &'static str,
        /// "read" or "executed".
        how: &'static str,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A process could not narrow its capability sets.
    #[error("narrowing the capabilities of the {role} process: {message}")]
    Narrow {
        /// The process.
        role: &'static str,
        /// What failed.
        message: String,
    },
}

impl PrivilegeError {
    /// [`exit::CONFIG`] for what the operator fixes in the configuration or the system's
    /// users and files, [`exit::RUNTIME`] for a failed system call.
    pub fn exit_code(&self) -> i32 {
        match self {
            PrivilegeError::UnknownUser(_)
            | PrivilegeError::WrongUser { .. }
            | PrivilegeError::SystemDirectory { .. }
            | PrivilegeError::NoAccess { .. } => exit::CONFIG,
            PrivilegeError::Lookup { .. }
            | PrivilegeError::Prepare { .. }
            | PrivilegeError::Drop { .. }
            | PrivilegeError::Narrow { .. } => exit::RUNTIME,
        }
    }
}

/// The configured user as the system knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUser {
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: Uid,
    /// Its primary group.
    pub gid: Gid,
    /// Every group it is in (the primary one included).
    pub groups: Vec<Gid>,
}

impl ServiceUser {
    /// Looks `name` up in the user database (NSS).
    pub fn lookup(name: &str) -> Result<ServiceUser, PrivilegeError> {
        let lookup = |source| PrivilegeError::Lookup {
            user: name.to_string(),
            source,
        };
        let user = nix::unistd::User::from_name(name)
            .map_err(lookup)?
            .ok_or_else(|| PrivilegeError::UnknownUser(name.to_string()))?;
        let cname = std::ffi::CString::new(name)
            .map_err(|_| PrivilegeError::UnknownUser(name.to_string()))?;
        let groups = nix::unistd::getgrouplist(&cname, user.gid).map_err(lookup)?;
        Ok(ServiceUser {
            name: name.to_string(),
            uid: user.uid,
            gid: user.gid,
            groups,
        })
    }
}

/// What the supervisor does about its privileges at start ([`plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Root without `user`: runs as root, as before (with a warning).
    StayRoot,
    /// Root with `user`: prepares, then drops to the user.
    Drop(ServiceUser),
    /// Already not root (the configured user, or no `user` set): keeps its uid, narrows its
    /// capabilities to [`SERVICE_CAPS`].
    Unprivileged,
}

/// Decides what to do with the process's privileges for `config`.
pub fn plan(config: &Config) -> Result<Plan, PrivilegeError> {
    let euid = nix::unistd::geteuid();
    match (&config.user, euid.is_root()) {
        (None, true) => Ok(Plan::StayRoot),
        (None, false) => Ok(Plan::Unprivileged),
        (Some(name), true) => Ok(Plan::Drop(ServiceUser::lookup(name)?)),
        (Some(name), false) => {
            let user = ServiceUser::lookup(name)?;
            if user.uid == euid {
                Ok(Plan::Unprivileged)
            } else {
                Err(PrivilegeError::WrongUser {
                    uid: euid.as_raw(),
                    user: name.clone(),
                    want: user.uid.as_raw(),
                })
            }
        }
    }
}

/// Carries out `plan` for the supervisor: see the module documentation. `config_path` and
/// `exe` are checked to be readable and executable by the user after a drop (reloads read the
/// file again; every child is `exe`).
pub fn apply(
    plan: &Plan,
    config: &Config,
    config_path: &Path,
    exe: &Path,
) -> Result<(), PrivilegeError> {
    match plan {
        Plan::StayRoot => {
            warn!("prodhcpd runs as root: set `user` in the configuration (e.g. user: \"prodhcp\") to drop to a service user after start");
            Ok(())
        }
        Plan::Unprivileged => narrow(Role::Supervisor),
        Plan::Drop(user) => {
            prepare(config, user)?;
            drop_to(user)?;
            check_access(config, config_path, exe, user)?;
            info!(
                user = %user.name,
                uid = user.uid.as_raw(),
                gid = user.gid.as_raw(),
                "dropped privileges: keeping CAP_NET_BIND_SERVICE, CAP_NET_RAW, CAP_NET_ADMIN"
            );
            Ok(())
        }
    }
}

/// Narrows a child process (worker, syncd, audit) to what its `role` needs, first thing after
/// exec. A child of a supervisor that runs as root (no `user`) stays as it is.
pub fn enter_child(role: Role) -> Result<(), PrivilegeError> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    narrow(role)
}

/// Drops every capability `role` does not keep from the effective, inheritable, permitted and
/// ambient sets (never raises one) and sets `no_new_privs`.
fn narrow(role: Role) -> Result<(), PrivilegeError> {
    let fail = |message: String| PrivilegeError::Narrow {
        role: role.name(),
        message,
    };
    let keep: CapsHashSet = role.keeps().iter().copied().collect();
    let effective: CapsHashSet = role.effective().iter().copied().collect();
    let sets = [
        (CapSet::Ambient, &keep),
        (CapSet::Effective, &effective),
        (CapSet::Inheritable, &keep),
        (CapSet::Permitted, &keep),
    ];
    for (set, keep) in sets {
        let have = caps::read(None, set).map_err(|e| fail(e.to_string()))?;
        for cap in have.difference(keep) {
            caps::drop(None, set, *cap).map_err(|e| fail(format!("{set:?} {cap}: {e}")))?;
        }
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| fail(format!("no_new_privs: {e}")))
}

/// Directories nobody's service owns: prodhcpd never gives them to its user.
const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib64",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/local",
    "/var",
    "/var/cache",
    "/var/lib",
    "/var/log",
    "/var/run",
    "/var/spool",
    "/var/tmp",
];

fn is_system_dir(path: &Path) -> bool {
    let normal: PathBuf = path.components().collect();
    SYSTEM_DIRS.iter().any(|d| normal == Path::new(d))
}

/// How deep [`give_tree`] goes below a directory (the state directory holds the audit spool,
/// one level down).
const MAX_DEPTH: usize = 4;

/// Gives what the service writes after the drop to `user`: the state directory and what it
/// holds (table, rings, audit spool), the table file, the control socket's directory, the audit
/// spool and the audit file's directory. System directories are refused, symbolic links never
/// followed, and a file with more than one hard link is left alone (it could be another file's
/// link planted there).
pub fn prepare(config: &Config, user: &ServiceUser) -> Result<(), PrivilegeError> {
    give_dir(&config.state_dir, "state_dir", user, true)?;
    if !config.table_file.starts_with(&config.state_dir) {
        give_file(&config.table_file, user)?;
    }
    if let Some(dir) = config.control_socket.parent() {
        give_dir(dir, "control_socket's directory", user, false)?;
    }
    if let Some(audit) = &config.audit {
        create_private(&audit.spool_dir, user)?;
        give_dir(&audit.spool_dir, "audit.spool_dir", user, true)?;
        if let Some(file) = &audit.file {
            if let Some(dir) = file.parent() {
                if is_system_dir(dir) {
                    return Err(PrivilegeError::SystemDirectory {
                        path: dir.to_path_buf(),
                        what: "audit.file's directory",
                        user: user.name.clone(),
                    });
                }
                create_private(dir, user)?;
                give_dir(dir, "audit.file's directory", user, false)?;
            }
            if file.exists() {
                give_file(file, user)?;
            }
        }
    }
    Ok(())
}

fn prepare_err(path: &Path, user: &ServiceUser) -> impl FnOnce(io::Error) -> PrivilegeError {
    let path = path.to_path_buf();
    let user = user.name.clone();
    move |source| PrivilegeError::Prepare { path, user, source }
}

/// Creates `dir` (mode 0750) when missing.
fn create_private(dir: &Path, user: &ServiceUser) -> Result<(), PrivilegeError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(prepare_err(dir, user))
}

/// Gives the directory `dir` (and, `recursive`, what it holds) to `user`.
fn give_dir(
    dir: &Path,
    what: &'static str,
    user: &ServiceUser,
    recursive: bool,
) -> Result<(), PrivilegeError> {
    if is_system_dir(dir) {
        return Err(PrivilegeError::SystemDirectory {
            path: dir.to_path_buf(),
            what,
            user: user.name.clone(),
        });
    }
    let meta = std::fs::symlink_metadata(dir).map_err(prepare_err(dir, user))?;
    if !meta.is_dir() {
        return Err(prepare_err(dir, user)(io::Error::other(
            "not a directory (symbolic links are not followed)",
        )));
    }
    give_tree(dir, &meta, user, if recursive { MAX_DEPTH } else { 0 })
}

fn give_tree(
    path: &Path,
    meta: &std::fs::Metadata,
    user: &ServiceUser,
    depth: usize,
) -> Result<(), PrivilegeError> {
    chown_if_needed(path, meta, user)?;
    if depth == 0 {
        return Ok(());
    }
    for entry in std::fs::read_dir(path).map_err(prepare_err(path, user))? {
        let entry = entry.map_err(prepare_err(path, user))?;
        let p = entry.path();
        let m = std::fs::symlink_metadata(&p).map_err(prepare_err(&p, user))?;
        if m.is_dir() {
            give_tree(&p, &m, user, depth - 1)?;
        } else if m.is_file() || m.file_type().is_symlink() || is_socket(&m) {
            give_file(&p, user)?;
        }
    }
    Ok(())
}

fn is_socket(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_socket()
}

/// Gives one file to `user` (never through a symbolic link, never one with several links).
fn give_file(path: &Path, user: &ServiceUser) -> Result<(), PrivilegeError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(prepare_err(path, user)(e)),
    };
    if meta.file_type().is_symlink() {
        warn!(path = %path.display(), "a symbolic link where prodhcpd keeps its files: left as it is");
        return Ok(());
    }
    if meta.is_file() && meta.nlink() > 1 {
        warn!(path = %path.display(), links = meta.nlink(), "a file with several hard links where prodhcpd keeps its files: not given to the service user");
        return Ok(());
    }
    chown_if_needed(path, &meta, user)
}

fn chown_if_needed(
    path: &Path,
    meta: &std::fs::Metadata,
    user: &ServiceUser,
) -> Result<(), PrivilegeError> {
    if meta.uid() == user.uid.as_raw() && meta.gid() == user.gid.as_raw() {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
        .map_err(prepare_err(path, user))
}

/// The drop itself (see the module documentation). Only while single-threaded: capabilities
/// and ids are set for the calling thread (the supervisor never starts one).
fn drop_to(user: &ServiceUser) -> Result<(), PrivilegeError> {
    let fail = |step: &'static str| {
        let name = user.name.clone();
        move |e: &dyn std::fmt::Display| PrivilegeError::Drop {
            user: name,
            step,
            message: e.to_string(),
        }
    };
    let keep: CapsHashSet = SERVICE_CAPS.iter().copied().collect();
    // The bounding set first: dropping from it needs CAP_SETPCAP, which root still has.
    let bounding = caps::read(None, CapSet::Bounding).map_err(|e| fail("bounding set")(&e))?;
    for cap in bounding.difference(&keep) {
        caps::drop(None, CapSet::Bounding, *cap).map_err(|e| fail("bounding set")(&e))?;
    }
    nix::sys::prctl::set_keepcaps(true).map_err(|e| fail("PR_SET_KEEPCAPS")(&e))?;
    nix::unistd::setgroups(&user.groups).map_err(|e| fail("setgroups")(&e))?;
    nix::unistd::setresgid(user.gid, user.gid, user.gid).map_err(|e| fail("setresgid")(&e))?;
    nix::unistd::setresuid(user.uid, user.uid, user.uid).map_err(|e| fail("setresuid")(&e))?;
    // Kept across setuid: the permitted set (the effective and ambient sets are cleared).
    caps::set(None, CapSet::Permitted, &keep).map_err(|e| fail("permitted set")(&e))?;
    caps::set(None, CapSet::Inheritable, &keep).map_err(|e| fail("inheritable set")(&e))?;
    let effective: CapsHashSet = Role::Supervisor.effective().iter().copied().collect();
    caps::set(None, CapSet::Effective, &effective).map_err(|e| fail("effective set")(&e))?;
    for cap in SERVICE_CAPS {
        caps::raise(None, CapSet::Ambient, cap).map_err(|e| fail("ambient set")(&e))?;
    }
    nix::sys::prctl::set_keepcaps(false).map_err(|e| fail("PR_SET_KEEPCAPS")(&e))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| fail("no_new_privs")(&e))?;
    // Verify: no id of root left, nothing but the three capabilities.
    let ids = nix::unistd::getresuid().map_err(|e| fail("getresuid")(&e))?;
    let gids = nix::unistd::getresgid().map_err(|e| fail("getresgid")(&e))?;
    if [ids.real, ids.effective, ids.saved]
        .iter()
        .any(|u| u.is_root())
        || [gids.real, gids.effective, gids.saved]
            .iter()
            .any(|g| g.as_raw() == 0 && user.gid.as_raw() != 0)
    {
        return Err(fail("verify")(&"a root id is left"));
    }
    let permitted = caps::read(None, CapSet::Permitted).map_err(|e| fail("verify")(&e))?;
    if permitted != keep {
        return Err(fail("verify")(&format!("permitted set is {permitted:?}")));
    }
    Ok(())
}

/// After a drop: the configuration file (read again on reload), the files children read
/// (cluster key, audit TLS files) and the executable every child is must be usable by `user`.
fn check_access(
    config: &Config,
    config_path: &Path,
    exe: &Path,
    user: &ServiceUser,
) -> Result<(), PrivilegeError> {
    let mut files: Vec<(&Path, &'static str)> = vec![(config_path, "the configuration file")];
    if let Some(cluster) = &config.cluster {
        files.push((&cluster.key_file, "cluster.key_file"));
    }
    if let Some(tls) = config.audit.as_ref().and_then(|a| a.tls.as_ref()) {
        files.push((&tls.ca_file, "audit.tls_ca_file"));
        if let Some(f) = &tls.cert_file {
            files.push((f, "audit.tls_cert_file"));
        }
        if let Some(f) = &tls.key_file {
            files.push((f, "audit.tls_key_file"));
        }
    }
    for (path, what) in files {
        std::fs::File::open(path).map_err(|source| PrivilegeError::NoAccess {
            user: user.name.clone(),
            path: path.to_path_buf(),
            what,
            how: "read",
            source,
        })?;
    }
    nix::unistd::access(exe, nix::unistd::AccessFlags::X_OK).map_err(|e| PrivilegeError::NoAccess {
        user: user.name.clone(),
        path: exe.to_path_buf(),
        what: "prodhcpd, which every child runs",
        how: "executed",
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_process_keeps_only_its_capabilities() {
        let mask = |caps: &[Capability]| caps.iter().fold(0u64, |m, c| m | c.bitmask());
        assert_eq!(mask(&SERVICE_CAPS), 0x3400);
        assert_eq!(mask(Role::Supervisor.keeps()), 0x3400);
        assert_eq!(mask(Role::Supervisor.effective()), 1 << 10);
        assert_eq!(mask(Role::Worker.keeps()), (1 << 10) | (1 << 13));
        assert_eq!(mask(Role::Worker.effective()), (1 << 10) | (1 << 13));
        assert_eq!(mask(Role::Syncd.keeps()), 0x3400);
        assert_eq!(mask(Role::Audit.keeps()), 0);
    }

    #[test]
    fn system_directories_are_recognised_however_written() {
        for d in [
            "/",
            "/run",
            "/run/",
            "/var/lib",
            "/var//lib",
            "/tmp",
            "/var/log/",
        ] {
            assert!(is_system_dir(Path::new(d)), "{d}");
        }
        for d in [
            "/run/prodhcp",
            "/var/lib/prodhcp",
            "/tmp/x",
            "/var/log/prodhcp",
        ] {
            assert!(!is_system_dir(Path::new(d)), "{d}");
        }
    }

    #[test]
    fn an_unknown_user_is_a_configuration_error_naming_it() {
        let e = ServiceUser::lookup("prodhcp-no-such-user-x").expect_err("unknown");
        assert_eq!(e.exit_code(), exit::CONFIG);
        assert!(e.to_string().contains("`prodhcp-no-such-user-x`"), "{e}");
        assert!(e.to_string().contains("does not exist"), "{e}");
        let root = ServiceUser::lookup("root").expect("root exists");
        assert!(root.uid.is_root());
    }
}
