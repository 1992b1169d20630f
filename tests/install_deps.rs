//! `scripts/install-deps.sh` on a fake Debian machine (tests/support/fake-apt): which versions
//! it accepts, what it installs, and which cross sections `scripts/test-all.sh` then runs.
//! No real apt, dpkg or network is touched. The machine models the mirror of 2026-12-06
//! (issue 17): bookworm main has rustc-web 1.85, bookworm-security 1.96, and the security
//! armhf index was mid-sync for an hour.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::TempDir;

const CURRENT: &str = "1.96.0+dfsg1-1~deb12u2";
const STALE: &str = "1.85.0+dfsg3-1~deb12u3";
const ARMV7: &str = "armv7-unknown-linux-gnueabihf";
const AARCH64: &str = "aarch64-unknown-linux-gnu";

struct Machine {
    dir: TempDir,
}

struct Run {
    ok: bool,
    out: String,
}

impl Machine {
    /// A fresh machine whose lists are a day old (the image's), with nothing installed.
    fn fresh() -> Machine {
        let dir = TempDir::new("install-deps");
        let fake = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/fake-apt");
        for d in ["bin", "cross", "m/lists"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        for name in ["apt-get", "apt-cache", "dpkg", "dpkg-query", "sudo"] {
            symlink(&fake, dir.path().join("bin").join(name)).unwrap();
        }
        // Debian's rustc lives outside PATH, as /usr/bin/rustc does behind rustup's.
        symlink(&fake, dir.path().join("cross/rustc")).unwrap();
        fs::write(dir.path().join("m/lists/amd64"), "stale\n").unwrap();
        Machine { dir }
    }

    fn with_installed(self, pkgs: &[(&str, &str)]) -> Machine {
        let mut text = String::new();
        for (p, v) in pkgs {
            text += &format!("{p} {v}\n");
            if let Some(arch) = p.strip_prefix("libstd-rust-web-dev:") {
                let triple = if arch == "arm64" { AARCH64 } else { ARMV7 };
                fs::create_dir_all(self.path(&format!("m/sysroot/lib/rustlib/{triple}/lib")))
                    .unwrap();
            }
        }
        fs::write(self.path("m/installed"), text).unwrap();
        fs::write(self.path("m/foreign"), "arm64\narmhf\n").unwrap();
        for a in ["amd64", "arm64", "armhf"] {
            fs::write(self.path(&format!("m/lists/{a}")), "current\n").unwrap();
        }
        self
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Runs the installer with the mirror mid-sync on `midsync`'s security index, if any.
    fn install(&self, armv7: bool, midsync: Option<&str>) -> Run {
        self.install_with(armv7, midsync, &[])
    }

    fn install_with(&self, armv7: bool, midsync: Option<&str>, env: &[(&str, &str)]) -> Run {
        let _ = fs::remove_file(self.path("m/calls"));
        let path = format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("bash");
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-deps.sh"))
            .env("PATH", path)
            .env("FAKE_APT_DIR", self.path("m"))
            .env("FAKE_APT_MIDSYNC", midsync.unwrap_or(""))
            .env("CROSS_RUSTC", self.path("cross/rustc"))
            .env("QUOLL_DEPS_STATUS", self.path("status"))
            .env("QUOLL_APT_RETRY_WAIT", "0")
            .envs(env.iter().copied());
        if armv7 {
            cmd.arg("--armv7");
        }
        let out = cmd.output().expect("run bash");
        Run {
            ok: out.status.success(),
            out: String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        }
    }

    fn installed(&self, pkg: &str) -> Option<String> {
        fs::read_to_string(self.path("m/installed"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{pkg} ")).map(str::to_owned))
    }

    /// The installed versions of rustc-web, the aarch64 std and the armv7 std.
    fn toolchain(&self) -> [Option<String>; 3] {
        [
            "rustc-web",
            "libstd-rust-web-dev:arm64",
            "libstd-rust-web-dev:armhf",
        ]
        .map(|p| self.installed(p))
    }

    fn apt_calls(&self) -> Vec<String> {
        fs::read_to_string(self.path("m/calls"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("apt-get"))
            .map(str::to_owned)
            .collect()
    }

    /// What scripts/test-all.sh makes of the status file: (targets it runs, its loud lines).
    fn sections(&self) -> (String, String) {
        let out = Command::new("bash")
            .arg("-c")
            .arg(". scripts/lib.sh && deps_targets \"$1\" && echo '|' && deps_skips \"$1\"")
            .arg("-")
            .arg(self.path("status"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (targets, skips) = text.split_once('|').unwrap();
        (targets.trim().to_owned(), skips.trim().to_owned())
    }
}

#[test]
fn healthy_mirror_installs_the_current_toolchain_and_both_sections_run() {
    let m = Machine::fresh();
    let run = m.install(true, None);
    assert!(run.ok, "{}", run.out);
    assert_eq!(
        m.toolchain(),
        [(); 3].map(|()| Some(CURRENT.to_string())),
        "{}",
        run.out
    );
    assert_eq!(m.sections(), (format!("{AARCH64} {ARMV7}"), String::new()));
}

/// The failure of issue 17: the security armhf index is mid-sync, apt keeps the day-old
/// security lists for every architecture, and the old script installed rustc-web 1.85.
#[test]
fn armhf_index_mid_sync_still_gets_rust_196_and_skips_only_armv7_loudly() {
    let m = Machine::fresh();
    let run = m.install(true, Some("armhf"));
    assert!(run.ok, "{}", run.out);
    expect_current_without_armv7(&m, &run.out);
    // The full update failed twice, then the lists came without armhf.
    let updates: Vec<_> = m
        .apt_calls()
        .into_iter()
        .filter(|c| c.contains("update"))
        .collect();
    assert_eq!(updates.len(), 3, "{updates:?}");
    assert!(
        updates[2].contains("APT::Architectures::=arm64") && !updates[2].contains("armhf"),
        "{updates:?}"
    );
    let (targets, skips) = m.sections();
    assert_eq!(targets, AARCH64, "the aarch64 suite always runs");
    assert!(
        skips.starts_with(&format!("NOT RUN: the {ARMV7} section"))
            && skips.contains("libstd-rust-web-dev:armhf")
            && skips.contains("Mirror sync in progress?"),
        "{skips}"
    );
    assert!(
        run.out.contains("the armv7 section will NOT run"),
        "{}",
        run.out
    );
}

/// Without the retry the stale lists offer 1.85: the installer must refuse them and say
/// which package, which version and why, not install them.
#[test]
fn stale_lists_for_a_required_architecture_stop_with_the_package_and_version() {
    let m = Machine::fresh();
    let run = m.install(true, Some("arm64"));
    assert!(!run.ok, "{}", run.out);
    assert!(
        run.out.contains(&format!(
            "rustc-web {STALE} (in the package lists) is older than rust-version 1.90 in Cargo.toml"
        )),
        "{}",
        run.out
    );
    assert_eq!(
        m.installed("rustc-web"),
        None,
        "nothing installed from stale lists"
    );
    assert!(
        !m.apt_calls().iter().any(|c| c.contains("install")),
        "{:?}",
        m.apt_calls()
    );
}

/// An update that fails for a reason that names no index (apt's lock held): the installer
/// goes on with the lists there are, and the version check decides. Day-old lists stop it;
/// it never installs from them.
#[test]
fn an_update_that_cannot_run_leaves_the_decision_to_the_version_check() {
    let m = Machine::fresh();
    let run = m.install_with(true, None, &[("FAKE_APT_LOCKED", "1")]);
    assert!(!run.ok, "{}", run.out);
    assert!(run.out.contains("Could not get lock"), "{}", run.out);
    assert!(
        run.out.contains(&format!(
            "rustc-web {STALE} (in the package lists) is older"
        )),
        "{}",
        run.out
    );
    assert_eq!(m.installed("rustc-web"), None);
    // Lists already current (an earlier update): the same failure installs what is missing.
    let m = Machine::fresh();
    for a in ["amd64", "arm64", "armhf"] {
        fs::write(m.path(&format!("m/lists/{a}")), "current\n").unwrap();
    }
    let run = m.install_with(true, None, &[("FAKE_APT_LOCKED", "1")]);
    assert!(run.ok, "{}", run.out);
    assert_eq!(m.installed("rustc-web").as_deref(), Some(CURRENT));
    assert_eq!(m.sections().0, format!("{AARCH64} {ARMV7}"));
}

#[test]
fn complete_machine_runs_no_apt_command() {
    let m = Machine::fresh().with_installed(&everything(CURRENT, true));
    let run = m.install(true, None);
    assert!(run.ok, "{}", run.out);
    assert_eq!(m.apt_calls(), Vec::<String>::new());
    assert_eq!(m.sections().0, format!("{AARCH64} {ARMV7}"));
}

/// The machine of issue 17 after the old script ran: rustc-web 1.85 with its std. Once the
/// mirror is well, the installer upgrades all three to one version.
#[test]
fn old_toolchain_is_upgraded_in_step() {
    let m = Machine::fresh().with_installed(&everything(STALE, true));
    let run = m.install(true, None);
    assert!(run.ok, "{}", run.out);
    assert_eq!(
        m.toolchain(),
        [(); 3].map(|()| Some(CURRENT.to_string())),
        "{}",
        run.out
    );
}

/// The machine of issue 17 after the old script ran, run again while the armhf index is
/// still mid-sync: rustc-web and the aarch64 std go to 1.96; the 1.85 armv7 std cannot stay
/// beside them (one version across architectures), and armv7 is skipped, not run against it.
#[test]
fn old_toolchain_during_armhf_mid_sync_upgrades_aarch64_and_skips_armv7() {
    let m = Machine::fresh().with_installed(&everything(STALE, true));
    let run = m.install(true, Some("armhf"));
    assert!(run.ok, "{}", run.out);
    expect_current_without_armv7(&m, &run.out);
    let (targets, skips) = m.sections();
    assert_eq!(targets, AARCH64);
    assert!(
        skips.contains(ARMV7) && skips.contains("libstd-rust-web-dev:armhf"),
        "{skips}"
    );
}

#[test]
fn without_armv7_flag_the_section_is_not_asked_for() {
    let m = Machine::fresh();
    let run = m.install(false, None);
    assert!(run.ok, "{}", run.out);
    assert_eq!(m.installed("libstd-rust-web-dev:armhf"), None);
    let (targets, skips) = m.sections();
    assert_eq!(targets, AARCH64);
    assert!(skips.contains("not asked for"), "{skips}");
}

#[test]
fn upstream_versions_compare_numerically() {
    // 1.100 is newer than 1.90; 1.9 is older. A leading epoch and the Debian revision go.
    let check = |have: &str, ok: bool| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(
                "eval \"$(sed -n '/^upstream()/p;/^version_ge()/p' scripts/install-deps.sh)\"; \
                 version_ge \"$(upstream \"$1\")\" 1.90",
            )
            .arg("-")
            .arg(have)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert_eq!(out.success(), ok, "{have}");
    };
    check(CURRENT, true);
    check(STALE, false);
    check("1:1.100.0+dfsg1-1", true);
    check("1.9.0-1", false);
    check("1.90.0-1", true);
}

fn everything(toolchain: &'static str, armv7: bool) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![
        ("rustc-web", toolchain),
        ("libstd-rust-web-dev:arm64", toolchain),
    ];
    if armv7 {
        v.push(("libstd-rust-web-dev:armhf", toolchain));
        v.push(("gcc-arm-linux-gnueabihf", "1.0-1"));
    }
    for p in [
        "gcc-aarch64-linux-gnu",
        "qemu-user",
        "ffmpeg",
        "srt-tools",
        "nginx",
        "time",
        "python3-venv",
        "python3-gi",
        "gir1.2-gst-rtsp-server-1.0",
        "gstreamer1.0-plugins-base",
        "gstreamer1.0-plugins-good",
        "gstreamer1.0-plugins-ugly",
        "gstreamer1.0-plugins-bad",
        "gstreamer1.0-libav",
        "chromium",
    ] {
        v.push((p, "1.0-1"));
    }
    v
}

/// rustc-web and the aarch64 std at the current version, no armv7 std.
fn expect_current_without_armv7(m: &Machine, out: &str) {
    let current = Some(CURRENT.to_string());
    assert_eq!(m.toolchain(), [current.clone(), current, None], "{out}");
}
