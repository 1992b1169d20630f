//! The config file on disk: atomic writes, mode 0600, load errors.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use quoll::config::store::{self, write_atomic};
use quoll::config::{self, ConfigFile, LoadError};

/// A fresh directory for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("quoll-config-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn mode(p: &std::path::Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn save_writes_pretty_json_with_mode_0600_and_load_reads_it_back() {
    let dir = TempDir::new("save");
    let path = dir.0.join("quoll.json");
    // An existing world-readable file must not keep its mode.
    fs::write(&path, "{}").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();

    let cfg = config::parse(config::EMBEDDED_DEFAULT).unwrap();
    let file = ConfigFile::new(&path);
    file.save(&cfg).unwrap();
    assert_eq!(mode(&path), 0o600);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("{\n  \"version\": 1,"), "{text}");
    assert!(text.ends_with("}\n"));
    assert_eq!(file.load().unwrap(), cfg);
    assert_eq!(store::load(&path).unwrap(), cfg);
    // Nothing but the file itself is left in the directory.
    assert_eq!(dir.entries(), ["quoll.json"]);
}

#[test]
fn write_atomic_sets_the_exact_mode_and_replaces_the_content() {
    let dir = TempDir::new("atomic");
    let path = dir.0.join("f");
    write_atomic(&path, b"one", 0o640).unwrap();
    assert_eq!(mode(&path), 0o640);
    write_atomic(&path, b"two", 0o600).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"two");
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn failed_write_leaves_no_temp_file() {
    let dir = TempDir::new("fail");
    // Renaming a file over a non-empty directory fails after the temp file was written.
    let target = dir.0.join("target");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("inside"), "x").unwrap();
    let err = write_atomic(&target, b"data", 0o600).unwrap_err();
    // rename(2) of a file onto a directory: EISDIR.
    assert_eq!(err.kind(), std::io::ErrorKind::IsADirectory, "{err}");
    assert_eq!(dir.entries(), ["target"]);
    // A missing directory is an error, not a panic.
    assert!(write_atomic(&dir.0.join("no/such/dir/f"), b"x", 0o600).is_err());
}

#[test]
fn concurrent_writers_never_collide_or_tear() {
    let dir = TempDir::new("concurrent");
    let path = dir.0.join("f");
    let a = vec![b'a'; 64 * 1024];
    let b = vec![b'b'; 64 * 1024];
    std::thread::scope(|s| {
        for bytes in [&a, &b] {
            let path = &path;
            s.spawn(move || {
                for _ in 0..50 {
                    write_atomic(path, bytes, 0o600).unwrap();
                }
            });
        }
    });
    let got = fs::read(&path).unwrap();
    assert!(got == a || got == b, "torn file");
    assert_eq!(dir.entries(), ["f"]);
}

#[test]
fn load_reports_missing_file_with_its_path() {
    let dir = TempDir::new("missing");
    let path = dir.0.join("absent.json");
    match ConfigFile::new(&path).load() {
        Err(e @ LoadError::Io { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("absent.json"), "{msg}");
            assert!(msg.starts_with("cannot read config file "), "{msg}");
        }
        other => panic!("expected an Io error, got {other:?}"),
    }
}

#[test]
fn load_reports_every_problem_of_an_invalid_file() {
    let dir = TempDir::new("invalid");
    let path = dir.0.join("bad.json");
    fs::write(&path, r#"{"version": 2, "server": {"listen_port": 0}}"#).unwrap();
    match ConfigFile::new(&path).load() {
        Err(LoadError::Invalid(errors)) => {
            let e: Vec<String> = errors.iter().map(ToString::to_string).collect();
            assert_eq!(
                e,
                [
                    "version: unsupported version 2 (this build reads version 1)",
                    "server.listen_port: must not be 0"
                ]
            );
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}
