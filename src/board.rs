//! Board profiles (`board/*.json`, embedded in the binary): where a board keeps its config,
//! data and runtime files, its serial console, watchdog settings and the kernel socket
//! buffer sizes SRT and UDP need, and the config a fresh box starts from.
//!
//! A profile is selected by `quoll run --board NAME`, else by `$QUOLL_BOARD`, else by the
//! file `/etc/quoll/board` that the Yocto recipe installs, so `quoll ctl` typed on the serial
//! console finds the same paths as the service.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The profiles this binary knows, by name.
const PROFILES: &[(&str, &str)] = &[
    (
        "raspberrypi4-64",
        include_str!("../board/raspberrypi4-64.json"),
    ),
    ("raspberrypi5", include_str!("../board/raspberrypi5.json")),
    (
        "jetson-orin-nano",
        include_str!("../board/jetson-orin-nano.json"),
    ),
];

/// Where the Yocto recipe records the image's board.
pub const BOARD_FILE: &str = "/etc/quoll/board";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub board: String,
    pub description: String,
    pub yocto_machine: String,
    pub rust_target: String,
    pub serial_console: SerialConsole,
    pub paths: Paths,
    pub watchdog: Watchdog,
    /// `sysctl` keys and values (`/etc/sysctl.d/60-quoll.conf` on the image).
    pub sysctl: BTreeMap<String, u64>,
    /// Resource budgets for this board's smallest memory variant (`config::budget`); the
    /// config's `limits` block overrides them. Derived in docs/security.md.
    pub limits: crate::config::Budget,
    /// The config a box without one starts from (written to `paths.config` on first run).
    pub default_config: serde_json::Value,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialConsole {
    /// Device under /dev, e.g. `ttyS0`.
    pub device: String,
    pub baud: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paths {
    pub config: PathBuf,
    pub data_dir: PathBuf,
    /// Holds the control socket (`ctl.sock`).
    pub runtime_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watchdog {
    /// `WatchdogSec=` of quoll.service: the runtime loop must ping within this.
    pub service_watchdog_sec: u32,
    /// The hardware watchdog systemd (PID 1) feeds.
    pub hardware_device: String,
    /// systemd's `RuntimeWatchdogSec=`: a hung kernel or PID 1 reboots the board.
    pub runtime_watchdog_sec: u32,
    /// systemd's `RebootWatchdogSec=`: bounds a reboot that hangs.
    pub reboot_watchdog_sec: u32,
}

#[derive(Debug)]
pub enum BoardError {
    Unknown(String),
    /// A profile shipped in the binary does not parse: a build defect, caught by the tests.
    Corrupt {
        board: String,
        error: String,
    },
}

impl std::fmt::Display for BoardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BoardError::Unknown(name) => write!(
                f,
                "unknown board {name:?} (known: {})",
                names().collect::<Vec<_>>().join(", ")
            ),
            BoardError::Corrupt { board, error } => {
                write!(f, "board profile {board:?} is corrupt: {error}")
            }
        }
    }
}

pub fn names() -> impl Iterator<Item = &'static str> {
    PROFILES.iter().map(|(n, _)| *n)
}

pub fn profile(name: &str) -> Result<Profile, BoardError> {
    let (_, text) = PROFILES
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| BoardError::Unknown(name.to_owned()))?;
    serde_json::from_str(text).map_err(|e| BoardError::Corrupt {
        board: name.to_owned(),
        error: e.to_string(),
    })
}

/// The budget a node on `board` starts from: the profile's, or [`Budget::GENERIC`] without
/// a (known) board.
///
/// [`Budget::GENERIC`]: crate::config::Budget::GENERIC
pub fn budget(board: Option<&str>) -> crate::config::Budget {
    board
        .and_then(|b| profile(b).ok())
        .map_or(crate::config::Budget::GENERIC, |p| p.limits)
}

/// The board named by the flag, `$QUOLL_BOARD` or [`BOARD_FILE`], in that order.
pub fn selected(flag: Option<&str>) -> Result<Option<Profile>, BoardError> {
    let from_env = std::env::var("QUOLL_BOARD").ok();
    let from_file = std::fs::read_to_string(BOARD_FILE).ok();
    select(flag, from_env.as_deref(), from_file.as_deref())
}

fn select(
    flag: Option<&str>,
    env: Option<&str>,
    file: Option<&str>,
) -> Result<Option<Profile>, BoardError> {
    let name = [flag, env, file]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|n| !n.is_empty());
    name.map(profile).transpose()
}

impl Profile {
    /// `/etc/sysctl.d/60-quoll.conf` for this board.
    pub fn sysctl_conf(&self) -> String {
        let mut s = format!(
            "# Quoll socket buffers for {} (generated from board/{}.json)\n",
            self.board, self.board
        );
        for (k, v) in &self.sysctl {
            s.push_str(&format!("{k} = {v}\n"));
        }
        s
    }

    /// Drop-in for quoll.service with this board's watchdog.
    pub fn service_dropin(&self) -> String {
        format!(
            "# quoll.service settings for {} (generated from board/{}.json)\n\
             [Service]\nWatchdogSec={}s\n",
            self.board, self.board, self.watchdog.service_watchdog_sec
        )
    }

    /// Drop-in for systemd's system.conf: PID 1 feeds the hardware watchdog.
    pub fn system_dropin(&self) -> String {
        format!(
            "# systemd hardware watchdog for {} (generated from board/{}.json)\n\
             [Manager]\nWatchdogDevice={}\nRuntimeWatchdogSec={}s\nRebootWatchdogSec={}s\n",
            self.board,
            self.board,
            self.watchdog.hardware_device,
            self.watchdog.runtime_watchdog_sec,
            self.watchdog.reboot_watchdog_sec
        )
    }

    /// Kernel settings below the profile's: the image lacks its sysctl file, or someone
    /// lowered them. Read from /proc; a key that cannot be read is skipped.
    pub fn sysctl_shortfalls(&self, proc_sys: &Path) -> Vec<(String, u64, u64)> {
        self.sysctl
            .iter()
            .filter_map(|(k, want)| {
                let path = proc_sys.join(k.replace('.', "/"));
                let have: u64 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
                (have < *want).then(|| (k.clone(), have, *want))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_parses_and_is_sane() {
        for name in names() {
            let p = profile(name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(p.board, name);
            assert!(p.paths.config.is_absolute(), "{name}: config path");
            assert!(p.paths.data_dir.is_absolute(), "{name}: data_dir");
            assert!(
                p.paths.runtime_dir.starts_with("/run"),
                "{name}: runtime_dir"
            );
            assert!(
                p.paths.config.starts_with(&p.paths.data_dir),
                "{name}: the config lives on the data partition (OTA keeps it)"
            );
            assert!(
                p.serial_console.device.starts_with("tty")
                    && !p.serial_console.device.contains('/'),
                "{name}: serial device is a name under /dev"
            );
            assert!([9600, 115_200, 921_600].contains(&p.serial_console.baud));
            assert!(p.rust_target.ends_with("-linux-gnu") || p.rust_target.ends_with("gnueabihf"));
            let w = &p.watchdog;
            assert!((5..=120).contains(&w.service_watchdog_sec), "{name}");
            assert!(w.hardware_device.starts_with("/dev/watchdog"), "{name}");
            assert!(w.runtime_watchdog_sec > 0 && w.reboot_watchdog_sec >= w.runtime_watchdog_sec);
            for key in ["net.core.rmem_max", "net.core.wmem_max"] {
                let v = p.sysctl.get(key).copied().unwrap_or(0);
                assert!(
                    v >= 4 << 20,
                    "{name}: {key} must hold quoll's 4 MiB socket buffers"
                );
            }
            for k in p.sysctl.keys() {
                assert!(k.starts_with("net."), "{name}: only network sysctls: {k}");
            }
            // The default config is a valid config that keeps its state on the data partition
            // and its API on loopback.
            let text = serde_json::to_string(&p.default_config).unwrap();
            let cfg = crate::config::parse(&text)
                .unwrap_or_else(|e| panic!("{name}: default_config invalid: {e:?}"));
            assert_eq!(Path::new(&cfg.storage.data_dir), p.paths.data_dir, "{name}");
            assert_eq!(
                cfg.server.listen_addr.to_string(),
                "127.0.0.1",
                "{name}: API on loopback"
            );
        }
        assert_eq!(names().count(), 3);
    }

    /// The values that must be exactly right for each board: the console a technician
    /// plugs into, the BSP's MACHINE name the recipe maps, the watchdog device and timings,
    /// and the socket buffers.
    #[test]
    fn each_profile_has_its_boards_exact_values() {
        struct Want {
            board: &'static str,
            machine: &'static str,
            serial: &'static str,
            watchdog_device: &'static str,
            service_watchdog_sec: u32,
            runtime_watchdog_sec: u32,
            rmem_max: u64,
            limits: (usize, usize, u64),
        }
        let wants = [
            Want {
                board: "raspberrypi4-64",
                machine: "raspberrypi4-64",
                // The Pi 4's mini UART on GPIO 14/15 (enable_uart=1).
                serial: "ttyS0",
                watchdog_device: "/dev/watchdog",
                service_watchdog_sec: 20,
                runtime_watchdog_sec: 15,
                rmem_max: 8 << 20,
                // 1 GB variant: must never swap (docs/security.md).
                limits: (16, 8, 64 << 20),
            },
            Want {
                board: "raspberrypi5",
                machine: "raspberrypi5",
                // The Pi 5's dedicated debug UART connector.
                serial: "ttyAMA10",
                watchdog_device: "/dev/watchdog",
                service_watchdog_sec: 20,
                runtime_watchdog_sec: 15,
                rmem_max: 8 << 20,
                limits: (32, 8, 96 << 20),
            },
            Want {
                board: "jetson-orin-nano",
                machine: "jetson-orin-nano-devkit",
                // Tegra Combined UART, the micro-USB/debug header console.
                serial: "ttyTCU0",
                watchdog_device: "/dev/watchdog0",
                service_watchdog_sec: 20,
                runtime_watchdog_sec: 30,
                rmem_max: 16 << 20,
                limits: (64, 16, 256 << 20),
            },
        ];
        assert_eq!(
            names().collect::<Vec<_>>(),
            wants.iter().map(|w| w.board).collect::<Vec<_>>()
        );
        for w in wants {
            let p = profile(w.board).unwrap();
            let name = w.board;
            assert_eq!(p.yocto_machine, w.machine, "{name}");
            assert_eq!(p.rust_target, "aarch64-unknown-linux-gnu", "{name}");
            assert_eq!(p.serial_console.device, w.serial, "{name}");
            assert_eq!(p.serial_console.baud, 115_200, "{name}");
            assert_eq!(
                p.paths.config,
                Path::new("/data/quoll/config.json"),
                "{name}"
            );
            assert_eq!(p.paths.data_dir, Path::new("/data/quoll"), "{name}");
            assert_eq!(p.paths.runtime_dir, Path::new("/run/quoll"), "{name}");
            assert_eq!(p.watchdog.hardware_device, w.watchdog_device, "{name}");
            assert_eq!(
                p.watchdog.service_watchdog_sec, w.service_watchdog_sec,
                "{name}"
            );
            assert_eq!(
                p.watchdog.runtime_watchdog_sec, w.runtime_watchdog_sec,
                "{name}"
            );
            assert_eq!(p.watchdog.reboot_watchdog_sec, 120, "{name}");
            assert_eq!(p.sysctl["net.core.rmem_max"], w.rmem_max, "{name}");
            assert_eq!(p.sysctl["net.core.wmem_max"], w.rmem_max, "{name}");
            let l = p.limits;
            assert_eq!(
                (l.max_flows, l.max_outputs_per_flow, l.max_ring_bytes),
                w.limits,
                "{name}"
            );
            assert_eq!(budget(Some(name)), p.limits);
            assert_eq!(
                p.default_config["server"],
                serde_json::json!({"listen_addr": "127.0.0.1", "listen_port": 8080}),
                "{name}"
            );
            assert_eq!(
                p.default_config["flows"],
                serde_json::json!([]),
                "{name}: a fresh box starts with no flows"
            );
        }
    }

    #[test]
    fn without_a_board_the_generic_budget_applies() {
        assert_eq!(budget(None), crate::config::Budget::GENERIC);
        assert_eq!(budget(Some("pi3")), crate::config::Budget::GENERIC);
    }

    #[test]
    fn selection_order_is_flag_env_file() {
        let pick = |f, e, file| select(f, e, file).unwrap().map(|p| p.board);
        assert_eq!(pick(None, None, None), None);
        assert_eq!(
            pick(None, None, Some("raspberrypi5\n")).as_deref(),
            Some("raspberrypi5")
        );
        assert_eq!(
            pick(None, Some("jetson-orin-nano"), Some("raspberrypi5")).as_deref(),
            Some("jetson-orin-nano")
        );
        assert_eq!(
            pick(Some("raspberrypi4-64"), Some("jetson-orin-nano"), None).as_deref(),
            Some("raspberrypi4-64")
        );
        assert!(matches!(
            select(Some("pi3"), None, None),
            Err(BoardError::Unknown(n)) if n == "pi3"
        ));
    }

    #[test]
    fn generated_files_carry_the_profile_values() {
        let p = profile("raspberrypi5").unwrap();
        assert!(p.sysctl_conf().contains("net.core.rmem_max = 8388608\n"));
        assert!(p.service_dropin().contains("WatchdogSec=20s\n"));
        assert!(p.system_dropin().contains("RuntimeWatchdogSec=15s\n"));
    }

    #[test]
    fn shortfalls_are_read_from_proc_sys() {
        let dir = std::env::temp_dir().join(format!("quoll-board-{}", std::process::id()));
        let core = dir.join("net/core");
        std::fs::create_dir_all(&core).unwrap();
        std::fs::write(core.join("rmem_max"), "212992\n").unwrap();
        std::fs::write(core.join("wmem_max"), "8388608\n").unwrap();
        let p = profile("raspberrypi4-64").unwrap();
        let short = p.sysctl_shortfalls(&dir);
        assert_eq!(
            short,
            [("net.core.rmem_max".to_owned(), 212_992, 8_388_608)]
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
