//! The A/B slot RAUC booted, for `health`.
//!
//! Two sources, in this order:
//!
//! 1. `rauc.slot=NAME` on the kernel command line, which RAUC's U-Boot and barebox
//!    integrations add. Free to read, so it is read at start.
//! 2. `rauc status --output-format=json`, whose `booted` field RAUC fills however it found
//!    the slot (the command line, or the root device it matched against its slots). This is
//!    the only source on boards that boot through EFI (the Jetson's `bootloader=efi`), where
//!    nothing adds `rauc.slot=`. It is asked once, at start, off the hot path: only when the
//!    command line had no answer and a `rauc` executable is on `PATH`, as a child process
//!    awaited by the runtime (no thread), and abandoned (killed) after [`STATUS_TIMEOUT`].
//!
//! The parsers are pure functions, tested on sample outputs below.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// How long `rauc status` may take (it asks the RAUC service over D-Bus, which may still be
/// starting on a fresh boot).
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// `rauc.slot=NAME` from a kernel command line.
pub fn slot_from_cmdline(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rauc.slot="))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The booted slot from `rauc status --output-format=json` (or `json-pretty`).
///
/// `booted` is what RAUC determined; it is normally a slot's bootname (`A`), but RAUC may
/// hold the root device there when it matched the slot by device (`/dev/mmcblk0p2`), in
/// which case the slot with that device gives the bootname. Without a usable `booted`, the
/// slot whose `state` is `booted` answers. `null`, `_external_` (booted from outside the
/// slots) and empty values are no answer.
pub fn slot_from_status_json(text: &str) -> Option<String> {
    let v: Value = serde_json::from_str(text.trim()).ok()?;
    // `slots` is a list of one-entry objects: [{"rootfs.0": {...}}, {"rootfs.1": {...}}].
    let slots: Vec<(&str, &Value)> = v
        .get("slots")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .flat_map(|o| o.iter().map(|(k, s)| (k.as_str(), s)))
        .collect();
    let field = |s: &Value, k: &str| {
        s.get(k)
            .and_then(Value::as_str)
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
    };
    let booted = v
        .get("booted")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|b| !b.is_empty() && *b != "_external_");
    if let Some(b) = booted {
        if !b.starts_with('/') {
            return Some(b.to_owned());
        }
        // A device path: name the slot on it.
        if let Some(name) = slots
            .iter()
            .find(|(_, s)| s.get("device").and_then(Value::as_str) == Some(b))
            .and_then(|(name, s)| field(s, "bootname").or_else(|| Some((*name).to_owned())))
        {
            return Some(name);
        }
    }
    slots
        .iter()
        .find(|(_, s)| s.get("state").and_then(Value::as_str) == Some("booted"))
        .and_then(|(name, s)| field(s, "bootname").or_else(|| Some((*name).to_owned())))
}

/// The `rauc` executable on `path` (a `PATH` value), if any.
pub fn find_rauc(path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path?)
        .filter(|d| d.is_absolute())
        .map(|d| d.join("rauc"))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Ask `rauc status` for the booted slot: `None` when it fails, says nothing usable, or
/// takes longer than `timeout` (it is then killed). Awaited on the runtime: no thread.
pub async fn query_status(rauc: &Path, timeout: Duration) -> Option<String> {
    let child = tokio::process::Command::new(rauc)
        .args(["status", "--output-format=json"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("cannot run {}: {e}", rauc.display());
            return None;
        }
    };
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => {
            let slot = slot_from_status_json(&String::from_utf8_lossy(&out.stdout));
            if slot.is_none() {
                tracing::debug!("rauc status names no booted slot");
            }
            slot
        }
        Ok(Ok(out)) => {
            tracing::debug!("rauc status failed: {}", out.status);
            None
        }
        Ok(Err(e)) => {
            tracing::debug!("rauc status: {e}");
            None
        }
        Err(_) => {
            tracing::warn!(
                "rauc status did not answer within {} s: the booted slot is not reported",
                timeout.as_secs()
            );
            None
        }
    }
}

/// The booted slot by the kernel command line alone (cheap, synchronous).
pub fn slot_from_proc_cmdline() -> Option<String> {
    std::fs::read_to_string("/proc/cmdline")
        .ok()
        .and_then(|c| slot_from_cmdline(&c))
}

/// The fallback: `rauc status`, if `rauc` is on `PATH`.
pub async fn slot_from_rauc_status() -> Option<String> {
    let rauc = find_rauc(std::env::var_os("PATH").as_deref())?;
    query_status(&rauc, STATUS_TIMEOUT).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_command_line() {
        let c = "console=ttyS0,115200 root=/dev/mmcblk0p3 rauc.slot=B rootwait";
        assert_eq!(slot_from_cmdline(c).as_deref(), Some("B"));
        assert_eq!(slot_from_cmdline("console=ttyS0 rootwait\n"), None);
        assert_eq!(slot_from_cmdline("rauc.slot= quiet"), None);
        assert_eq!(slot_from_cmdline("rauc.slot=A\n").as_deref(), Some("A"));
    }

    /// `rauc status --output-format=json` from a U-Boot board (RAUC 1.x layout: `booted`
    /// is the bootname, `slots` a list of one-key objects).
    const UBOOT: &str = r#"{"compatible":"quoll-raspberrypi4-64","variant":null,"booted":"B","boot_primary":"rootfs.1","slots":[{"rootfs.0":{"class":"rootfs","device":"/dev/mmcblk0p2","type":"ext4","bootname":"A","state":"inactive","parent":null,"mountpoint":null,"boot_status":"good"}},{"rootfs.1":{"class":"rootfs","device":"/dev/mmcblk0p3","type":"ext4","bootname":"B","state":"booted","parent":null,"mountpoint":"/","boot_status":"good"}}]}"#;

    /// `--output-format=json-pretty` on a Jetson booting through EFI, with RAUC holding the
    /// root device in `booted`.
    const EFI_DEVICE: &str = r#"{
  "compatible" : "quoll-jetson-orin-nano",
  "variant" : null,
  "booted" : "/dev/nvme0n1p2",
  "boot_primary" : "rootfs.1",
  "slots" : [
    {
      "rootfs.0" : {
        "class" : "rootfs",
        "device" : "/dev/nvme0n1p1",
        "type" : "ext4",
        "bootname" : "A",
        "state" : "inactive",
        "parent" : null,
        "mountpoint" : null,
        "boot_status" : "good"
      }
    },
    {
      "rootfs.1" : {
        "class" : "rootfs",
        "device" : "/dev/nvme0n1p2",
        "type" : "ext4",
        "bootname" : "B",
        "state" : "booted",
        "parent" : null,
        "mountpoint" : "/",
        "boot_status" : "good"
      }
    }
  ]
}
"#;

    #[test]
    fn rauc_status_json() {
        assert_eq!(slot_from_status_json(UBOOT).as_deref(), Some("B"));
        assert_eq!(slot_from_status_json(EFI_DEVICE).as_deref(), Some("B"));
        // `booted` null: the slot in state `booted` answers.
        let null_booted = UBOOT.replace(r#""booted":"B""#, r#""booted":null"#);
        assert_eq!(slot_from_status_json(&null_booted).as_deref(), Some("B"));
        // Booted from outside the slots (e.g. a rescue system): no slot.
        let external = UBOOT
            .replace(r#""booted":"B""#, r#""booted":"_external_""#)
            .replace(r#""state":"booted""#, r#""state":"inactive""#);
        assert_eq!(slot_from_status_json(&external), None);
        // Not JSON (an old rauc without JSON support prints an error), or empty.
        assert_eq!(slot_from_status_json("json support is disabled"), None);
        assert_eq!(slot_from_status_json(""), None);
        assert_eq!(slot_from_status_json("{}"), None);
    }

    #[test]
    fn rauc_is_looked_up_on_path_only_as_an_executable_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("quoll-rauc-path-{}", std::process::id()));
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        // Not executable in a, executable in b.
        std::fs::write(a.join("rauc"), "#!/bin/sh\n").unwrap();
        std::fs::write(b.join("rauc"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(b.join("rauc"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([&a, &b]).unwrap();
        assert_eq!(find_rauc(Some(&path)), Some(b.join("rauc")));
        let only_a = std::env::join_paths([&a]).unwrap();
        assert_eq!(find_rauc(Some(&only_a)), None);
        assert_eq!(find_rauc(None), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A `rauc` that hangs is killed at the timeout and the answer is "unknown"; one that
    /// answers is parsed.
    #[test]
    fn rauc_status_is_bounded_by_its_timeout() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("quoll-rauc-run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let hang = dir.join("rauc-hang");
        std::fs::write(&hang, "#!/bin/sh\nexec sleep 30\n").unwrap();
        let good = dir.join("rauc-good");
        std::fs::write(&good, format!("#!/bin/sh\ncat <<'EOF'\n{UBOOT}\nEOF\n")).unwrap();
        for f in [&hang, &good] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let started = std::time::Instant::now();
        let hung = rt.block_on(query_status(&hang, Duration::from_millis(300)));
        assert_eq!(hung, None);
        assert!(started.elapsed() < Duration::from_secs(20), "bounded");
        let answered = rt.block_on(query_status(&good, Duration::from_secs(30)));
        assert_eq!(answered.as_deref(), Some("B"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
