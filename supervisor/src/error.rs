//! Why `prodhcpd` could not start (or go on), each with its typed cause and its exit code.

use std::io;
use std::path::PathBuf;

use shm_layout::{RingOpenError, TableOpenError};

/// Documented exit codes of `prodhcpd`.
pub mod exit {
    /// Clean stop.
    pub const OK: i32 = 0;
    /// Runtime failure (sockets, control socket, fatal I/O).
    pub const RUNTIME: i32 = 1;
    /// Bad configuration or usage.
    pub const CONFIG: i32 = 2;
    /// The lease table cannot be used (corrupt, truncated, locked, unsafe).
    pub const TABLE: i32 = 3;
}

/// A fatal start-up error. [`StartError::exit_code`] says which of the documented [`exit`]
/// codes `prodhcpd` ends with; the message is for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration file could not be read.
    #[error("{}: {source}", path.display())]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The configuration is invalid.
    #[error("{}: {source}", path.display())]
    InvalidConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: prodhcp_config::ConfigError,
    },
    /// The state directory could not be created or given its permissions.
    #[error("state dir {}: {source}", path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The lease table could not be opened, created, locked or migrated.
    #[error(transparent)]
    Table(#[from] TableOpenError),
    /// A change ring could not be opened or created.
    #[error(transparent)]
    Ring(#[from] RingOpenError),
    /// Writing the lease table file failed (while migrating it).
    #[error("{0}")]
    TableWrite(#[source] io::Error),
    /// Putting a migrated table file in place failed (`what`: which step).
    #[error("{what}: {source}")]
    TableRename {
        /// The step: keeping the old table, installing the new one.
        what: &'static str,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A process recorded as a writer of the table still runs and could not be ended.
    #[error("{0}")]
    LiveWriter(String),
    /// The UDP socket group could not be created.
    #[error("UDP port {port}: {source}")]
    UdpPort {
        /// The port.
        port: u16,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The control socket's directory could not be created.
    #[error("control socket dir {}: {source}", path.display())]
    ControlSocketDir {
        /// The directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The control socket could not be bound.
    #[error("control socket {}: {source}", path.display())]
    ControlSocket {
        /// The socket's path.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The event loop could not be set up (`what`: poll, signals, the control socket).
    #[error("{what}: {source}")]
    EventLoop {
        /// The part that failed.
        what: &'static str,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The cluster key file is missing, malformed, or readable by group or others.
    #[error(transparent)]
    ClusterKey(#[from] prodhcp_syncd::key::KeyError),
    /// The supervisor's own executable (which it runs as each worker) could not be found.
    #[error("own executable: {0}")]
    OwnExecutable(#[source] io::Error),
    /// The configuration's `user` does not exist (or the user database cannot be read).
    #[error("{}: {source}", path.display())]
    User {
        /// The configuration file.
        path: PathBuf,
        /// What the lookup found.
        #[source]
        source: crate::privileges::PrivilegeError,
    },
    /// The privilege drop to `user` (or the narrowing of the capabilities) failed.
    #[error(transparent)]
    Privileges(#[from] crate::privileges::PrivilegeError),
}

impl StartError {
    /// The exit code `prodhcpd` ends with: [`exit::CONFIG`] for the configuration,
    /// [`exit::TABLE`] for the lease table and its rings, [`exit::RUNTIME`] otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::ReadConfig { .. }
            | StartError::InvalidConfig { .. }
            | StartError::ClusterKey(_) => exit::CONFIG,
            StartError::Table(_)
            | StartError::Ring(_)
            | StartError::TableWrite(_)
            | StartError::TableRename { .. }
            | StartError::LiveWriter(_) => exit::TABLE,
            StartError::StateDir { .. }
            | StartError::UdpPort { .. }
            | StartError::ControlSocketDir { .. }
            | StartError::ControlSocket { .. }
            | StartError::EventLoop { .. }
            | StartError::OwnExecutable(_) => exit::RUNTIME,
            StartError::User { source, .. } | StartError::Privileges(source) => source.exit_code(),
        }
    }
}

/// Why a reload (SIGHUP) was refused; the running configuration stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadRefused {
    /// The new file could not be read or is invalid.
    #[error(transparent)]
    Config(StartError),
    /// The new configuration changes what only a restart can change.
    #[error(
        "the new configuration changes the table file or the ring capacity; that needs a restart"
    )]
    LayoutChanged,
    /// A change of the number of workers in a cluster (syncd takes one doorbell per worker).
    #[error("in a cluster the number of workers changes only with a restart (syncd holds one doorbell per worker)")]
    ClusterWorkers,
    /// A pool layout change in a cluster (the peers replicate slots by position).
    #[error("in a cluster a pool layout change needs a restart of every appliance (replication maps leases by table position, so every appliance builds its table the same way at start)")]
    ClusterLayout,
    /// The pool layout change does not fit the room the lease table was created with.
    #[error("the pool layout change cannot be made live: {0}")]
    NoRoom(shm_layout::RelayoutError),
    /// The new configuration moves the listening port or the control socket.
    #[error("listen_port and control_socket cannot change on reload; restart instead")]
    ListenerChanged,
    /// The new configuration changes `user`.
    #[error(
        "`user` is read at start only (the supervisor has already dropped to it); restart instead"
    )]
    UserChanged,
    /// The new configuration adds, removes or changes the `cluster` section.
    #[error("the cluster section cannot change on reload (syncd keeps the configuration it was started with); restart instead")]
    ClusterChanged,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io() -> io::Error {
        io::Error::from(io::ErrorKind::PermissionDenied)
    }

    #[test]
    fn each_situation_keeps_its_documented_exit_code_and_message() {
        let path = PathBuf::from("/etc/prodhcp/x.ron");
        let parse = prodhcp_config::parse("not ron").expect_err("invalid");
        let cases: Vec<(StartError, i32, &str)> = vec![
            (
                StartError::ReadConfig {
                    path: path.clone(),
                    source: io(),
                },
                2,
                "/etc/prodhcp/x.ron: permission denied",
            ),
            (
                StartError::InvalidConfig {
                    path: path.clone(),
                    source: parse,
                },
                2,
                "/etc/prodhcp/x.ron: ",
            ),
            (
                StartError::Table(TableOpenError::Locked {
                    path: "/var/lib/prodhcp/leases.table".into(),
                }),
                3,
                "",
            ),
            (
                StartError::LiveWriter("pid 7 lives".into()),
                3,
                "pid 7 lives",
            ),
            (
                StartError::TableRename {
                    what: "keeping old table",
                    source: io(),
                },
                3,
                "keeping old table: permission denied",
            ),
            (StartError::TableWrite(io()), 3, "permission denied"),
            (
                StartError::UdpPort {
                    port: 67,
                    source: io(),
                },
                1,
                "UDP port 67: permission denied",
            ),
            (
                StartError::StateDir {
                    path: "/var/lib/prodhcp".into(),
                    source: io(),
                },
                1,
                "state dir /var/lib/prodhcp: permission denied",
            ),
            (
                StartError::ControlSocket {
                    path: "/run/prodhcp/ctl.sock".into(),
                    source: io(),
                },
                1,
                "control socket /run/prodhcp/ctl.sock: permission denied",
            ),
            (
                StartError::ControlSocketDir {
                    path: "/run/prodhcp".into(),
                    source: io(),
                },
                1,
                "control socket dir /run/prodhcp: permission denied",
            ),
            (
                StartError::EventLoop {
                    what: "poll",
                    source: io(),
                },
                1,
                "poll: permission denied",
            ),
            (
                StartError::OwnExecutable(io()),
                1,
                "own executable: permission denied",
            ),
        ];
        for (e, code, starts) in cases {
            assert_eq!(e.exit_code(), code, "{e:?}");
            assert!(e.to_string().starts_with(starts), "{e}");
        }
    }
}
