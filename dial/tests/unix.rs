//! unix transport: the suite plus the socket file's life cycle.

mod common;

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{connected, opts, parse, suite, within};
use dial::DialString;

fn sock(dir: &Path, name: &str) -> (PathBuf, DialString) {
    let path = dir.join(name);
    let ds = parse(&format!("unix!{}", path.display()));
    (path, ds)
}

#[tokio::test]
async fn conversation() {
    let dir = tempfile::tempdir().unwrap();
    suite(&sock(dir.path(), "s.sock").1).await;
}

#[tokio::test]
async fn socket_is_0600_and_removed_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let (path, ds) = sock(dir.path(), "s.sock");
    let listener = dial::listen(&ds, &opts()).await.unwrap();
    assert_eq!(listener.local_addr(), ds);
    let meta = fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    drop(listener);
    assert!(!path.exists(), "socket file left behind");
}

#[tokio::test]
async fn missing_parent_directory_is_created_0700() {
    let dir = tempfile::tempdir().unwrap();
    let (path, ds) = sock(dir.path(), "sub/dir/s.sock");
    let _listener = dial::listen(&ds, &opts()).await.unwrap();
    assert!(path.exists());
    for d in ["sub", "sub/dir"] {
        let mode = fs::metadata(dir.path().join(d)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{d}");
    }
}

#[tokio::test]
async fn stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (path, ds) = sock(dir.path(), "s.sock");
    // A std listener does not remove its file: what a crashed process leaves.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let (_l, mut client, mut server) = connected(&ds).await;
    common::exchange(&mut client, &mut server).await;
}

#[tokio::test]
async fn live_socket_is_not_stolen() {
    let dir = tempfile::tempdir().unwrap();
    let (path, ds) = sock(dir.path(), "s.sock");
    let _owner = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let err = dial::listen(&ds, &opts()).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    assert_eq!(err.to_string(), format!("{ds}: replace old socket: another process is listening on it"));
    assert!(path.exists());
}

#[tokio::test]
async fn regular_file_is_not_clobbered() {
    let dir = tempfile::tempdir().unwrap();
    let (path, ds) = sock(dir.path(), "s.sock");
    fs::write(&path, b"precious").unwrap();
    let err = dial::listen(&ds, &opts()).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(
        err.to_string(),
        format!("{ds}: replace old socket: the path exists and is not a socket; refusing to replace it")
    );
    assert_eq!(fs::read(&path).unwrap(), b"precious");
}

#[tokio::test]
async fn drop_leaves_a_successors_socket_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (path, ds) = sock(dir.path(), "s.sock");
    let first = dial::listen(&ds, &opts()).await.unwrap();
    fs::remove_file(&path).unwrap();
    let _second = dial::listen(&ds, &opts()).await.unwrap();
    drop(first);
    assert!(path.exists(), "first listener removed its successor's socket");
    within("dial successor", dial::dial(&ds, &opts())).await.unwrap();
}

#[tokio::test]
async fn accepted_link_knows_the_peer_uid() {
    let dir = tempfile::tempdir().unwrap();
    let me = fs::metadata(dir.path()).unwrap().uid();
    let (_path, ds) = sock(dir.path(), "s.sock");
    let (_l, client, server) = connected(&ds).await;
    assert_eq!(server.uid, Some(me));
    assert_eq!(client.uid, None);
    assert_eq!(client.remote, ds.to_string());
    assert_eq!(server.local, ds.to_string());
    assert!(server.remote.starts_with(&format!("{ds} (pid ")), "{}", server.remote);
}

#[tokio::test]
async fn nobody_listening_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, ds) = sock(dir.path(), "s.sock");
    let err = dial::dial(&ds, &opts()).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    assert_eq!(err.to_string(), format!("{ds}: nobody listening (no socket file)"));
    // A stale socket file refuses too.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let err = dial::dial(&ds, &opts()).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
}
