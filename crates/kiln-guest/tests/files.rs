//! File requests: atomic chunked writes, streaming reads, and the metadata operations with the
//! error kinds the host relies on.

mod common;

use common::{Guest, error_kind};
use kiln_protocol::guest::{DirEntry, ErrorKind, FileKind, FileStat, GuestMessage, HostMessage};
use std::os::unix::fs::PermissionsExt;

const CHUNK: usize = 256 * 1024;

/// Deterministic contents that catch reordered or repeated chunks (251 is prime, 256 is not).
fn contents(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn temp_files(guest: &Guest) -> Vec<String> {
    std::fs::read_dir(guest.dir())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".kiln-tmp-"))
        .collect()
}

async fn stat(conn: &mut common::Conn, path: String) -> FileStat {
    match conn.request(HostMessage::Stat { path }).await {
        GuestMessage::Stat { stat } => stat,
        other => panic!("expected Stat, got {other:?}"),
    }
}

#[tokio::test]
async fn a_10_mib_file_is_written_atomically_and_read_back_in_chunks() {
    let guest = Guest::start();
    let mut conn = guest.connect().await;
    let data = contents(10 * 1024 * 1024);
    let path = guest.path("big.bin");
    let id = conn.fresh_id();
    let mut chunks = data.chunks(CHUNK);
    let first = chunks.next().expect("data").to_vec();
    conn.send_data(
        id,
        HostMessage::WriteFile {
            path: path.clone(),
            mode: None,
            eof: false,
        },
        first,
    )
    .await;
    for chunk in chunks.by_ref().take(20) {
        conn.send_data(id, HostMessage::WriteChunk { eof: false }, chunk.to_vec())
            .await;
    }
    // The reply to a later request proves the guest has taken the chunks so far.
    let reply = conn.request(HostMessage::ListPorts).await;
    assert!(matches!(reply, GuestMessage::Ports { .. }), "{reply:?}");
    assert!(
        !guest.dir().join("big.bin").exists(),
        "the file appeared before eof"
    );
    assert_eq!(
        temp_files(&guest).len(),
        1,
        "the contents go to one temp file"
    );

    for chunk in chunks {
        conn.send_data(id, HostMessage::WriteChunk { eof: false }, chunk.to_vec())
            .await;
    }
    conn.send(id, HostMessage::WriteChunk { eof: true }).await;
    assert_eq!(conn.recv_for(id).await, GuestMessage::Done);
    assert!(temp_files(&guest).is_empty(), "temp file left behind");
    assert!(std::fs::read(guest.dir().join("big.bin")).expect("written") == data);

    let id = conn.fresh_id();
    conn.send(id, HostMessage::ReadFile { path }).await;
    let mut read = Vec::new();
    loop {
        let frame = conn.recv().await;
        assert_eq!(frame.id, id);
        match frame.msg {
            GuestMessage::FileChunk => {
                assert!(!frame.data.is_empty() && frame.data.len() <= CHUNK);
                read.extend_from_slice(&frame.data);
            }
            GuestMessage::FileEnd { size } => {
                assert_eq!(size, data.len() as u64);
                break;
            }
            other => panic!("unexpected frame while reading: {other:?}"),
        }
    }
    assert!(read == data, "read back different contents");
}

#[tokio::test]
async fn writes_use_the_given_mode_else_the_existing_one_else_0644() {
    let guest = Guest::start();
    let mut conn = guest.connect().await;
    let write = |name: &str, mode| HostMessage::WriteFile {
        path: guest.path(name),
        mode,
        eof: true,
    };

    assert_eq!(conn.request(write("new", None)).await, GuestMessage::Done);
    assert_eq!(stat(&mut conn, guest.path("new")).await.mode, 0o644);

    assert_eq!(
        conn.request(write("private", Some(0o600))).await,
        GuestMessage::Done
    );
    assert_eq!(stat(&mut conn, guest.path("private")).await.mode, 0o600);

    let script = guest.dir().join("script.sh");
    std::fs::write(&script, "old").expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o751)).expect("chmod");
    conn.send_data(99, write("script.sh", None), &b"new"[..])
        .await;
    assert_eq!(conn.recv_for(99).await, GuestMessage::Done);
    assert_eq!(std::fs::read(&script).expect("read"), b"new");
    assert_eq!(stat(&mut conn, guest.path("script.sh")).await.mode, 0o751);
}

#[tokio::test]
async fn a_failed_write_reports_once_and_absorbs_its_remaining_chunks() {
    let guest = Guest::start();
    let mut conn = guest.connect().await;
    let path = guest.path("missing/file");
    conn.send_data(
        5,
        HostMessage::WriteFile {
            path,
            mode: None,
            eof: false,
        },
        &b"a"[..],
    )
    .await;
    assert_eq!(error_kind(&conn.recv_for(5).await), ErrorKind::NotFound);
    conn.send_data(5, HostMessage::WriteChunk { eof: false }, &b"b"[..])
        .await;
    conn.send_data(5, HostMessage::WriteChunk { eof: true }, &b"c"[..])
        .await;
    // No stray replies for id 5: the next frame is the answer to the next request.
    let reply = conn.request(HostMessage::ListPorts).await;
    assert!(matches!(reply, GuestMessage::Ports { .. }), "{reply:?}");

    let as_dir = HostMessage::WriteFile {
        path: guest.path("sub/"),
        mode: None,
        eof: true,
    };
    assert_eq!(
        error_kind(&conn.request(as_dir).await),
        ErrorKind::InvalidRequest
    );
    std::fs::create_dir(guest.dir().join("sub")).expect("mkdir");
    let over_dir = HostMessage::WriteFile {
        path: guest.path("sub"),
        mode: None,
        eof: true,
    };
    assert_eq!(
        error_kind(&conn.request(over_dir).await),
        ErrorKind::IsADirectory
    );
    assert!(temp_files(&guest).is_empty());
}

#[tokio::test]
async fn a_write_cut_off_by_a_closed_connection_leaves_nothing_behind() {
    let guest = Guest::start();
    let mut conn = guest.connect().await;
    let msg = HostMessage::WriteFile {
        path: guest.path("partial"),
        mode: None,
        eof: false,
    };
    conn.send_data(1, msg, contents(1000)).await;
    common::wait_until("the temp file exists", || temp_files(&guest).len() == 1).await;
    drop(conn);
    common::wait_until("the temp file is removed", || temp_files(&guest).is_empty()).await;
    assert!(!guest.dir().join("partial").exists());
}

#[tokio::test]
async fn reading_anything_but_an_existing_regular_file_fails() {
    let guest = Guest::start();
    let mut conn = guest.connect().await;
    let missing = conn
        .request(HostMessage::ReadFile {
            path: guest.path("nope"),
        })
        .await;
    assert_eq!(error_kind(&missing), ErrorKind::NotFound);
    let dir = conn
        .request(HostMessage::ReadFile {
            path: guest.path(""),
        })
        .await;
    assert_eq!(error_kind(&dir), ErrorKind::IsADirectory);
    // Opening a FIFO for reading would wait for a writer; the guest must refuse at once.
    let fifo = guest.dir().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let reply = conn
        .request(HostMessage::ReadFile {
            path: guest.path("fifo"),
        })
        .await;
    assert_eq!(error_kind(&reply), ErrorKind::InvalidRequest);

    let empty = guest.dir().join("empty");
    std::fs::write(&empty, "").expect("write");
    let reply = conn
        .request(HostMessage::ReadFile {
            path: guest.path("empty"),
        })
        .await;
    assert_eq!(reply, GuestMessage::FileEnd { size: 0 });
}

#[tokio::test]
async fn mkdir_list_stat_and_remove() {
    let guest = Guest::start();
    let mut conn = guest.connect().await;
    let mkdir = |name: &str, parents, mode| HostMessage::Mkdir {
        path: guest.path(name),
        parents,
        mode,
    };

    assert_eq!(
        conn.request(mkdir("t/a/b", true, None)).await,
        GuestMessage::Done
    );
    assert_eq!(
        conn.request(mkdir("t/a/b", true, None)).await,
        GuestMessage::Done
    );
    assert_eq!(
        error_kind(&conn.request(mkdir("t/a/b", false, None)).await),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        error_kind(&conn.request(mkdir("t/x/y", false, None)).await),
        ErrorKind::NotFound
    );
    assert_eq!(
        conn.request(mkdir("t/private", false, Some(0o700))).await,
        GuestMessage::Done
    );
    assert_eq!(stat(&mut conn, guest.path("t/private")).await.mode, 0o700);

    std::fs::write(guest.dir().join("t/file"), "12345").expect("write");
    std::os::unix::fs::symlink("/nonexistent/target", guest.dir().join("t/link")).expect("link");
    let entries = match conn
        .request(HostMessage::ListDir {
            path: guest.path("t"),
        })
        .await
    {
        GuestMessage::Entries { entries } => entries,
        other => panic!("expected Entries, got {other:?}"),
    };
    let summary: Vec<_> = entries
        .iter()
        .map(|DirEntry { name, stat }| (name.as_str(), stat.kind))
        .collect();
    assert_eq!(
        summary,
        [
            ("a", FileKind::Dir),
            ("file", FileKind::File),
            ("link", FileKind::Symlink),
            ("private", FileKind::Dir)
        ]
    );
    let file = entries[1].stat;
    assert_eq!(file.size, 5);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    assert!(
        (now_ms - file.mtime_ms).abs() < 60_000,
        "mtime {} vs now {now_ms}",
        file.mtime_ms
    );

    // Stat does not follow the final symlink (whose target does not even exist).
    assert_eq!(
        stat(&mut conn, guest.path("t/link")).await.kind,
        FileKind::Symlink
    );
    let under_file = conn
        .request(HostMessage::Stat {
            path: guest.path("t/file/x"),
        })
        .await;
    assert_eq!(error_kind(&under_file), ErrorKind::NotADirectory);
    let list_file = conn
        .request(HostMessage::ListDir {
            path: guest.path("t/file"),
        })
        .await;
    assert_eq!(error_kind(&list_file), ErrorKind::NotADirectory);

    let remove = |name: &str, recursive| HostMessage::Remove {
        path: guest.path(name),
        recursive,
    };
    assert_eq!(
        error_kind(&conn.request(remove("t/a", false)).await),
        ErrorKind::DirectoryNotEmpty
    );
    assert_eq!(
        conn.request(remove("t/link", false)).await,
        GuestMessage::Done
    );
    assert_eq!(
        conn.request(remove("t/file", false)).await,
        GuestMessage::Done
    );
    assert_eq!(conn.request(remove("t/a", true)).await, GuestMessage::Done);
    assert_eq!(
        conn.request(remove("t/private", false)).await,
        GuestMessage::Done
    );
    assert_eq!(
        error_kind(&conn.request(remove("t/a", true)).await),
        ErrorKind::NotFound
    );
    assert_eq!(
        conn.request(HostMessage::ListDir {
            path: guest.path("t")
        })
        .await,
        GuestMessage::Entries { entries: vec![] }
    );
}
