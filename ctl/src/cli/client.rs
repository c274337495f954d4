//! The connection to the control socket, and what a failure means for the exit status.

use std::io::{self, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use prodhcp_proto::{
    encode_request, parse_export_frame, parse_response, read_line_bounded, Command, ExportFrame,
    ReadLineError, Request, Response, MAX_RESPONSE_LINE,
};

/// Process exit status of `prodhcpctl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0
    Success,
    /// 1: the command failed.
    Failed,
    /// 2: usage error.
    Usage,
    /// 3: the daemon cannot be reached.
    Unreachable,
}

impl ExitStatus {
    /// The numeric exit code.
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Failed => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Unreachable => 3,
        }
    }
}

/// Why connecting to the socket failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    /// ENOENT / ENOTDIR.
    NoSocket,
    /// EACCES / EPERM.
    PermissionDenied,
    /// ECONNREFUSED (socket file without a listener).
    Refused,
    /// The connection was not accepted in time (backlog full).
    Busy,
    /// Anything else.
    Other(String),
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectFailure::NoSocket => f.write_str("no such socket (is prodhcpd running?)"),
            ConnectFailure::PermissionDenied => {
                f.write_str("permission denied (are you root or in the prodhcp group?)")
            }
            ConnectFailure::Refused => {
                f.write_str("connection refused (stale socket; prodhcpd not running)")
            }
            ConnectFailure::Busy => {
                f.write_str("the daemon did not accept the connection in time (busy?)")
            }
            ConnectFailure::Other(e) => f.write_str(e),
        }
    }
}

/// Classify a `connect()` error.
pub fn classify_connect_error(e: &io::Error) -> ConnectFailure {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => ConnectFailure::NoSocket,
        Some(libc::EACCES) | Some(libc::EPERM) => ConnectFailure::PermissionDenied,
        Some(libc::ECONNREFUSED) => ConnectFailure::Refused,
        Some(libc::EAGAIN) | Some(libc::ETIMEDOUT) | Some(libc::EINPROGRESS) => {
            ConnectFailure::Busy
        }
        _ => match e.kind() {
            io::ErrorKind::NotFound => ConnectFailure::NoSocket,
            io::ErrorKind::PermissionDenied => ConnectFailure::PermissionDenied,
            io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ConnectFailure::Busy,
            _ => ConnectFailure::Other(e.to_string()),
        },
    }
}

/// Errors of a `prodhcpctl` command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CtlError {
    /// The socket could not be connected.
    #[error("cannot connect to prodhcpd at {path}: {reason}")]
    Connect {
        /// Socket path.
        path: String,
        /// Why.
        reason: ConnectFailure,
    },
    /// No answer within the timeout.
    #[error("prodhcpd at {path} did not answer within {secs} s")]
    Timeout {
        /// Socket path.
        path: String,
        /// The timeout.
        secs: u64,
    },
    /// The connection broke mid-conversation.
    #[error("connection to prodhcpd at {path} lost: {detail}")]
    ConnectionLost {
        /// Socket path.
        path: String,
        /// What happened.
        detail: String,
    },
    /// The daemon's answer did not follow the protocol.
    #[error("unexpected answer from prodhcpd: {0}")]
    Protocol(String),
    /// The daemon answered `ok: false`.
    #[error("{0}")]
    Failed(String),
    /// Bad arguments found after parsing.
    #[error("{0}")]
    Usage(String),
    /// A local problem (input file, stdout).
    #[error("{0}")]
    Local(String),
}

impl CtlError {
    /// The exit status this error maps to.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            CtlError::Connect { .. }
            | CtlError::Timeout { .. }
            | CtlError::ConnectionLost { .. } => ExitStatus::Unreachable,
            CtlError::Usage(_) => ExitStatus::Usage,
            CtlError::Protocol(_) | CtlError::Failed(_) | CtlError::Local(_) => ExitStatus::Failed,
        }
    }
}

pub(super) fn stdout_error(e: io::Error) -> CtlError {
    CtlError::Local(format!("cannot write to stdout: {e}"))
}

/// A connection to the control socket.
pub struct ControlClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    path: String,
    read_timeout: Duration,
}

impl ControlClient {
    /// Connect to `path`, waiting at most `timeout` for the daemon to accept; reads and writes
    /// time out after `timeout` too (see [`ControlClient::set_timeout`]).
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, CtlError> {
        let shown = path.display().to_string();
        let connect_err = |e: &io::Error| CtlError::Connect {
            path: shown.clone(),
            reason: classify_connect_error(e),
        };
        let addr = socket2::SockAddr::unix(path)
            .map_err(|e| CtlError::Usage(format!("invalid socket path {shown}: {e}")))?;
        let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)
            .map_err(|e| connect_err(&e))?;
        // For AF_UNIX, a blocking connect() to a full backlog waits up to SO_SNDTIMEO.
        socket
            .set_write_timeout(Some(timeout))
            .map_err(|e| connect_err(&e))?;
        socket.connect(&addr).map_err(|e| connect_err(&e))?;
        let stream = UnixStream::from(socket);
        let writer = stream.try_clone().map_err(|e| connect_err(&e))?;
        let mut client = ControlClient {
            reader: BufReader::with_capacity(256 << 10, stream),
            writer,
            path: shown,
            read_timeout: timeout,
        };
        client.set_timeout(timeout)?;
        Ok(client)
    }

    /// Change the per-read and per-write timeout.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), CtlError> {
        self.read_timeout = timeout;
        let set = |s: &UnixStream| -> io::Result<()> {
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))
        };
        set(self.reader.get_ref())
            .and_then(|()| set(&self.writer))
            .map_err(|e| self.lost(&e))
    }

    fn lost(&self, e: &io::Error) -> CtlError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => CtlError::Timeout {
                path: self.path.clone(),
                secs: self.read_timeout.as_secs(),
            },
            _ => CtlError::ConnectionLost {
                path: self.path.clone(),
                detail: e.to_string(),
            },
        }
    }

    /// Send one request.
    pub fn send(&mut self, request: &Request) -> Result<(), CtlError> {
        let line = encode_request(request).map_err(|e| CtlError::Local(e.to_string()))?;
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| self.lost(&e))
    }

    fn read_line(&mut self) -> Result<String, CtlError> {
        match read_line_bounded(&mut self.reader, MAX_RESPONSE_LINE) {
            Ok(Some(line)) => Ok(line),
            Ok(None) => Err(CtlError::ConnectionLost {
                path: self.path.clone(),
                detail: "prodhcpd closed the connection without answering".to_string(),
            }),
            Err(ReadLineError::Io(e)) => Err(self.lost(&e)),
            Err(e) => Err(CtlError::Protocol(e.to_string())),
        }
    }

    /// Read one response line.
    pub fn recv(&mut self) -> Result<Response, CtlError> {
        let line = self.read_line()?;
        parse_response(&line).map_err(|e| CtlError::Protocol(e.to_string()))
    }

    /// Read one line of an export stream.
    pub fn recv_export_frame(&mut self) -> Result<ExportFrame, CtlError> {
        let line = self.read_line()?;
        parse_export_frame(&line).map_err(|e| CtlError::Protocol(e.to_string()))
    }

    /// Send a request and read its response.
    pub fn call(&mut self, command: Command) -> Result<Response, CtlError> {
        self.send(&Request::new(command))?;
        self.recv()
    }
}
