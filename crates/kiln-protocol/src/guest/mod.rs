//! The guest-agent protocol: how the host asks the agent inside a sandbox to run commands and
//! touch files, and how the agent answers.
//!
//! One connection carries many concurrent requests. Every frame names a request id chosen by the
//! host; follow-up frames of a request (stdin bytes, file chunks, a signal) reuse its id, and every
//! reply or stream item from the guest carries it too. Bulk bytes (output, file contents) travel in
//! the frame's binary data section, never inside JSON.
//!
//! The guest is untrusted: whatever runs in the sandbox can take it over. The host therefore
//! treats every guest frame as hostile input (bounded sizes, strict decoding).

mod frame;

pub use frame::{Frame, FrameCodec, FrameError, MAX_DATA_LEN, MAX_HEADER_LEN, RawFrame};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bumped on every incompatible change. Host and guest exchange it in [`HostMessage::Hello`] /
/// [`GuestMessage::Hello`] and refuse to talk across versions.
pub const PROTOCOL_VERSION: u32 = 1;

/// Identifies one request and all frames that belong to it. Chosen by the host, never zero
/// (zero marks replies to frames whose id could not be read).
pub type RequestId = u64;

/// Host → guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum HostMessage {
    /// First frame on a connection. Answered by [`GuestMessage::Hello`].
    Hello { version: u32 },
    /// Start a process. Answered by `ExecStarted`, then `Output`* and `ExecExited`, or by `Error`.
    Exec(ExecRequest),
    /// Bytes for the stdin of the exec with this frame's id (in the data section).
    /// `eof` closes stdin after writing them.
    Stdin { eof: bool },
    /// Deliver a signal to the process group of the exec with this frame's id.
    Signal { signal: i32 },
    /// Stream a file: answered by `FileChunk`* then `FileEnd`, or `Error`.
    ReadFile { path: String },
    /// Begin an atomic write. The frame's data and those of following `WriteChunk` frames with the
    /// same id are the contents; the file appears under `path` only after `eof`. Answered by `Done`.
    WriteFile {
        path: String,
        mode: Option<u32>,
        eof: bool,
    },
    /// More contents for the write with this frame's id.
    WriteChunk { eof: bool },
    /// Answered by `Entries`.
    ListDir { path: String },
    /// Answered by `Stat`. Does not follow a final symlink.
    Stat { path: String },
    /// Answered by `Done`. A directory needs `recursive`.
    Remove { path: String, recursive: bool },
    /// Answered by `Done`.
    Mkdir {
        path: String,
        parents: bool,
        mode: Option<u32>,
    },
    /// TCP sockets listening inside the sandbox. Answered by `Ports`.
    ListPorts,
}

/// Guest → host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum GuestMessage {
    Hello {
        version: u32,
        pid: u32,
    },
    ExecStarted {
        pid: u32,
    },
    /// Output bytes (in the data section) from one stream of a running exec.
    Output {
        stream: OutputStream,
    },
    ExecExited {
        status: ExitStatus,
    },
    /// File contents (in the data section).
    FileChunk,
    FileEnd {
        size: u64,
    },
    Entries {
        entries: Vec<DirEntry>,
    },
    Stat {
        stat: FileStat,
    },
    Ports {
        ports: Vec<ListeningPort>,
    },
    /// The request finished without a payload.
    Done,
    /// The request failed; no further frames follow for its id. A frame that a *live* request
    /// cannot take (stdin it did not ask for, a new request reusing its id, a bad signal number)
    /// is answered with an `Error` under id 0 instead, naming the request, and the request goes
    /// on: an `Error` on a request's own id always means that request is over.
    Error {
        kind: ErrorKind,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    pub command: CommandLine,
    /// Working directory inside the sandbox; the sandbox's default when absent.
    pub cwd: Option<String>,
    /// Added to (and overriding) the sandbox's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// When false, stdin is `/dev/null`; when true the host sends `Stdin` frames.
    #[serde(default)]
    pub stdin: bool,
    /// The guest kills the process group once this has elapsed.
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CommandLine {
    /// Executed directly, `argv[0]` looked up in `PATH`.
    Argv { argv: Vec<String> },
    /// Run by `/bin/sh -c`.
    Shell { script: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitStatus {
    /// Exit code when the process exited normally.
    pub code: Option<i32>,
    /// Signal number when a signal ended it.
    pub signal: Option<i32>,
    /// The guest killed it because its timeout elapsed.
    pub timed_out: bool,
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The shell convention: the code, or 128 + signal.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => 255,
        }
    }
}

/// How it ended, for people: `exited with 127`, `killed by signal 9`, `timed out`.
impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.timed_out, self.code, self.signal) {
            (true, _, _) => f.write_str("timed out"),
            (false, Some(code), _) => write!(f, "exited with {code}"),
            (false, None, Some(signal)) => write!(f, "killed by signal {signal}"),
            (false, None, None) => f.write_str("ended without an exit status"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirEntry {
    pub name: String,
    pub stat: FileStat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStat {
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits (`0o7777` mask).
    pub mode: u32,
    /// Modification time, milliseconds since the Unix epoch.
    pub mtime_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListeningPort {
    pub port: u16,
    /// The local address, e.g. `127.0.0.1`, `0.0.0.0` or `::`.
    pub address: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    PermissionDenied,
    AlreadyExists,
    NotADirectory,
    IsADirectory,
    DirectoryNotEmpty,
    /// The frame could not be decoded or the request makes no sense.
    InvalidRequest,
    /// The request names an id the guest does not know (e.g. stdin for a finished exec).
    UnknownRequest,
    /// The peer speaks another protocol version.
    VersionMismatch,
    Io,
}

impl ErrorKind {
    /// Maps an OS error to the protocol's kinds.
    pub fn from_io(err: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        match err.kind() {
            K::NotFound => Self::NotFound,
            K::PermissionDenied => Self::PermissionDenied,
            K::AlreadyExists => Self::AlreadyExists,
            K::NotADirectory => Self::NotADirectory,
            K::IsADirectory => Self::IsADirectory,
            K::DirectoryNotEmpty => Self::DirectoryNotEmpty,
            K::InvalidInput => Self::InvalidRequest,
            _ => Self::Io,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ExitStatus;

    #[test]
    fn exit_statuses_read_as_people_say_them() {
        let status = |code, signal, timed_out| ExitStatus {
            code,
            signal,
            timed_out,
        };
        assert_eq!(
            status(Some(127), None, false).to_string(),
            "exited with 127"
        );
        assert_eq!(
            status(None, Some(9), false).to_string(),
            "killed by signal 9"
        );
        assert_eq!(status(None, Some(9), true).to_string(), "timed out");
    }
}
