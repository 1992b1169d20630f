//! The Yocto layer (`yocto/meta-quoll`) is checked here as far as it can be without bitbake:
//! its structure, the recipe's classes and license checksum, the systemd units, the RAUC
//! examples, that the crates include lists exactly the crates `bitbake -c update_crates
//! quoll` would write from Cargo.lock, that the per-board files match `board/*.json`, the
//! README and image snippet, the git revision export, and the ptest runner's skip list.
//! Also that every file docs/appliance.md names exists.
//!
//! `QUOLL_UPDATE_YOCTO=1 cargo test --test yocto_layer` (or `scripts/update-yocto.sh`)
//! rewrites the generated files instead of comparing them.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn layer() -> PathBuf {
    root().join("yocto/meta-quoll")
}

fn recipe_dir() -> PathBuf {
    layer().join("recipes-multimedia/quoll")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn updating() -> bool {
    std::env::var_os("QUOLL_UPDATE_YOCTO").is_some_and(|v| v == "1")
}

/// Compare a generated file with its expected text, or write it in update mode.
fn check_generated(path: &Path, expected: &str) {
    if updating() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, expected).unwrap();
        return;
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == expected,
        "{} is out of date: run scripts/update-yocto.sh",
        path.display()
    );
}

/// A value assigned in a bitbake file (`KEY = "value"`, first match, one line).
fn assigned<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.trim_start();
        let rest = rest
            .strip_prefix("??=")
            .or_else(|| rest.strip_prefix("?="))
            .or_else(|| rest.strip_prefix("+="))
            .or_else(|| rest.strip_prefix('='))?;
        Some(rest.trim().trim_matches('"'))
    })
}

/// The crates include: what poky's cargo-update-recipe-crates class writes (every
/// crates.io package of Cargo.lock in file order, then their checksums), in the layout
/// oelint-adv accepts (scripts/lint-yocto.sh): the first crate on the `SRC_URI += "` line,
/// not a leading space (oelint.vars.inconspaces), and the others aligned under it
/// (oelint.vars.multilineident). The class itself writes `SRC_URI += " \`, so regenerate
/// with scripts/update-yocto.sh, not `bitbake -c update_crates quoll`.
fn crates_inc(lock: &str) -> String {
    struct Pkg {
        name: String,
        version: String,
        source: String,
        checksum: Option<String>,
    }
    let mut pkgs: Vec<Pkg> = Vec::new();
    let field = |line: &str, key: &str| {
        line.strip_prefix(key)
            .and_then(|r| r.strip_prefix(" = \""))
            .and_then(|r| r.strip_suffix('"'))
            .map(str::to_owned)
    };
    for line in lock.lines() {
        if line == "[[package]]" {
            pkgs.push(Pkg {
                name: String::new(),
                version: String::new(),
                source: String::new(),
                checksum: None,
            });
            continue;
        }
        let Some(p) = pkgs.last_mut() else { continue };
        if let Some(v) = field(line, "name") {
            p.name = v;
        } else if let Some(v) = field(line, "version") {
            p.version = v;
        } else if let Some(v) = field(line, "source") {
            p.source = v;
        } else if let Some(v) = field(line, "checksum") {
            p.checksum = Some(v);
        }
    }
    let from_io: Vec<&Pkg> = pkgs
        .iter()
        .filter(|p| p.source.contains("crates.io"))
        .collect();
    assert!(!from_io.is_empty(), "Cargo.lock has no crates.io packages");
    let mut s = String::from(
        "# Generated from Cargo.lock by scripts/update-yocto.sh: the crates of\n\
         # 'bitbake -c update_crates quoll', laid out as oelint-adv wants them.\n\n",
    );
    const ASSIGN: &str = "SRC_URI += \"";
    s.push_str("# from Cargo.lock\n");
    s.push_str(ASSIGN);
    let indent = " ".repeat(ASSIGN.len());
    let mut sums = String::new();
    for (i, p) in from_io.into_iter().enumerate() {
        let key = format!("{}-{}", p.name, p.version);
        if i > 0 {
            s.push('\n');
            s.push_str(&indent);
        }
        s.push_str(&format!(
            "crate://crates.io/{}/{};name={key} \\",
            p.name, p.version
        ));
        if let Some(c) = &p.checksum {
            sums.push_str(&format!("\nSRC_URI[{key}.sha256sum] = \"{c}\""));
        }
    }
    s.push_str("\n\"\n");
    s.push_str(&sums);
    s.push('\n');
    s
}

#[test]
fn crates_include_matches_cargo_lock() {
    let lock = read(&root().join("Cargo.lock"));
    check_generated(&recipe_dir().join("quoll-crates.inc"), &crates_inc(&lock));
    // The class walks every Cargo.lock under the source tree: only the root one may exist.
    let fuzz_lock = root().join("fuzz/Cargo.lock");
    let tracked = Command::new("git")
        .args(["ls-files", "--error-unmatch"])
        .arg(&fuzz_lock)
        .current_dir(root())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        !tracked,
        "fuzz/Cargo.lock must stay untracked (it would join the crates include)"
    );
}

#[test]
fn board_files_match_the_board_profiles() {
    for name in quoll::board::names() {
        let p = quoll::board::profile(name).unwrap();
        let dir = recipe_dir().join("files/boards").join(name);
        check_generated(&dir.join("60-quoll.conf"), &p.sysctl_conf());
        check_generated(&dir.join("10-board-watchdog.conf"), &p.service_dropin());
        check_generated(&dir.join("10-quoll-hw-watchdog.conf"), &p.system_dropin());
        // RAUC picks files/<MACHINE>/system.conf by machine override.
        let rauc = layer()
            .join("dynamic-layers/rauc/recipes-core/rauc/files")
            .join(&p.yocto_machine)
            .join("system.conf");
        let conf = read(&rauc);
        // The bbappend adds its files only for the machines it has a system.conf for
        // (a Yocto-compatible layer changes nothing for other machines).
        let append =
            read(&layer().join("dynamic-layers/rauc/recipes-core/rauc/rauc-conf.bbappend"));
        let line = format!(
            "FILESEXTRAPATHS:prepend:{} := \"${{THISDIR}}/files:\"",
            p.yocto_machine
        );
        assert!(
            append.lines().any(|l| l == line),
            "rauc-conf.bbappend lacks {line}"
        );
        for needle in [
            "[system]",
            &format!("compatible=quoll-{name}"),
            "bootloader=",
            "data-directory=/data/",
            "[slot.rootfs.0]",
            "[slot.rootfs.1]",
            "bootname=A",
            "bootname=B",
        ] {
            assert!(conf.contains(needle), "{}: no {needle}", rauc.display());
        }
    }
}

#[test]
fn layer_conf_is_compatible_with_whinlatter_and_wrynose() {
    let conf = read(&layer().join("conf/layer.conf"));
    for key in [
        "BBPATH",
        "BBFILES",
        "BBFILE_COLLECTIONS",
        "BBFILE_PATTERN_quoll",
        "BBFILE_PRIORITY_quoll",
        "LAYERDEPENDS_quoll",
    ] {
        assert!(conf.contains(key), "layer.conf lacks {key}");
    }
    let compat = assigned(&conf, "LAYERSERIES_COMPAT_quoll").expect("LAYERSERIES_COMPAT_quoll");
    let series: Vec<&str> = compat.split_whitespace().collect();
    assert!(series.contains(&"wrynose"), "current LTS: {series:?}");
    assert!(series.contains(&"whinlatter"), "{series:?}");
    assert!(conf.contains("rauc:${LAYERDIR}/dynamic-layers/rauc/"));
}

#[test]
fn recipe_uses_the_poky_classes_and_its_license_checksum_is_right() {
    let bb_path = recipe_dir().join(format!("quoll_{}.bb", env!("CARGO_PKG_VERSION")));
    let bb = read(&bb_path);
    let inherit = bb
        .lines()
        .find(|l| l.starts_with("inherit "))
        .expect("inherit line");
    for class in [
        "cargo",
        "cargo-update-recipe-crates",
        "systemd",
        "ptest-cargo",
        "useradd",
    ] {
        assert!(
            inherit.split_whitespace().any(|c| c == class),
            "recipe does not inherit {class}"
        );
    }
    assert!(bb.contains("require quoll-crates.inc"));
    assert_eq!(assigned(&bb, "LICENSE"), Some(env!("CARGO_PKG_LICENSE")));
    // HOMEPAGE follows Cargo.toml's `homepage`: none yet (scripts/lint-yocto.sh says why).
    let home = env!("CARGO_PKG_HOMEPAGE");
    assert_eq!(
        assigned(&bb, "HOMEPAGE"),
        (!home.is_empty()).then_some(home)
    );
    let chk = assigned(&bb, "LIC_FILES_CHKSUM").unwrap();
    let md5 = chk.split("md5=").nth(1).unwrap();
    let out = Command::new("md5sum")
        .arg(root().join("LICENSE"))
        .output()
        .expect("md5sum");
    let actual = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        actual.split_whitespace().next(),
        Some(md5),
        "LICENSE changed"
    );
    // Every file:// in SRC_URI exists (board files through each known board).
    let boards = assigned(&bb, "QUOLL_BOARDS").unwrap();
    let known: Vec<&str> = quoll::board::names().collect();
    assert_eq!(boards.split_whitespace().collect::<Vec<_>>(), known);
    for uri in bb
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("file://"))
    {
        for board in &known {
            let f = recipe_dir()
                .join("files")
                .join(uri.trim_end_matches('"').replace("${QUOLL_BOARD}", board));
            assert!(f.exists(), "{} is in SRC_URI but missing", f.display());
        }
    }
    let services = assigned(&bb, "SYSTEMD_SERVICE:${PN}").unwrap();
    for unit in services.split_whitespace() {
        assert!(recipe_dir().join("files").join(unit).exists(), "{unit}");
    }
}

#[test]
fn units_gate_ota_and_feed_the_watchdog() {
    let unit = read(&recipe_dir().join("files/quoll.service"));
    for line in [
        "Type=notify",
        "ExecStart=/usr/bin/quoll run",
        "RequiresMountsFor=/data/quoll",
        "RuntimeDirectory=quoll",
        "RuntimeDirectoryMode=0700",
        "Restart=always",
        "ReadWritePaths=/data/quoll",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "quoll.service lacks {line}"
        );
    }
    assert!(unit.lines().any(|l| l.starts_with("WatchdogSec=")));
    let health = read(&recipe_dir().join("files/quoll-health.service"));
    for line in [
        "Before=boot-complete.target",
        "RequiredBy=boot-complete.target",
        "Type=oneshot",
        "Requires=quoll.service",
        "After=quoll.service",
    ] {
        assert!(
            health.lines().any(|l| l == line),
            "quoll-health.service lacks {line}"
        );
    }
    let exec = health
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    assert!(
        exec.starts_with("/usr/bin/quoll ctl health --boot-check"),
        "{exec}"
    );
    // A fresh data partition has no /data/quoll: tmpfiles creates it for the service user.
    let tmpfiles = read(&recipe_dir().join("files/quoll-tmpfiles.conf"));
    assert!(
        tmpfiles
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["d", "/data/quoll", "0700", "quoll", "quoll", "-"]),
        "{tmpfiles}"
    );
    let image = read(&layer().join("recipes-core/images/quoll-image.inc"));
    assert!(image.contains("IMAGE_INSTALL:append = \" quoll\""));
}

#[test]
fn readme_and_image_snippet_cover_the_board_settings() {
    let image = read(&layer().join("recipes-core/images/quoll-image.inc"));
    // Every yocto/... path the snippet names exists.
    for word in image.split_whitespace() {
        let word = word.trim_end_matches(['.', ',', ')']);
        if let Some(rel) = word.strip_prefix("yocto/") {
            assert!(
                root().join("yocto").join(rel).exists(),
                "quoll-image.inc refers to {word}, which does not exist"
            );
        }
    }
    // The read-only rootfs line is explained as what it is.
    let lines: Vec<&str> = image.lines().collect();
    let ro = lines
        .iter()
        .position(|l| l.starts_with("IMAGE_FEATURES") && l.contains("read-only-rootfs"))
        .expect("read-only-rootfs");
    assert!(
        lines[..ro]
            .iter()
            .rev()
            .take_while(|l| l.starts_with('#'))
            .any(|l| l.contains("read-only")),
        "the comment above read-only-rootfs must be about it"
    );
    // The Pi settings are named and checked (they belong in local.conf, not the image).
    for (var, why) in [
        ("ENABLE_UART", "serial console"),
        ("RPI_USE_U_BOOT", "bootloader=uboot"),
    ] {
        assert!(image.contains(&format!("{var} = \"1\"")), "image: {var}");
        assert!(
            image.contains(&format!("d.getVar('{var}') != '1'")),
            "image: {var} is checked"
        );
        let readme = read(&root().join("yocto/README.md"));
        assert!(readme.contains(&format!("{var} = \"1\"")), "README: {var}");
        assert!(readme.contains(why), "README explains {var}");
    }
    // The Pi RAUC examples really are U-Boot ones (what RPI_USE_U_BOOT is for).
    for machine in ["raspberrypi4-64", "raspberrypi5"] {
        let conf = read(
            &layer()
                .join("dynamic-layers/rauc/recipes-core/rauc/files")
                .join(machine)
                .join("system.conf"),
        );
        assert!(conf.lines().any(|l| l == "bootloader=uboot"), "{machine}");
    }
    let readme = read(&root().join("yocto/README.md"));
    assert!(
        readme.contains("cannot run"),
        "README says bitbake cannot run here"
    );
}

#[test]
fn recipe_exports_the_git_revision_build_rs_reads() {
    let build_rs = read(&root().join("build.rs"));
    assert!(
        build_rs.contains("std::env::var(\"QUOLL_GIT_REV\")"),
        "build.rs reads QUOLL_GIT_REV"
    );
    let bb = read(&recipe_dir().join(format!("quoll_{}.bb", env!("CARGO_PKG_VERSION"))));
    assert!(
        bb.lines()
            .any(|l| l == "export QUOLL_GIT_REV = \"${SRCREV}\""),
        "the recipe exports QUOLL_GIT_REV from SRCREV"
    );
}

/// The words assigned to a shell variable in run-ptest (`NAME="..."`, maybe multi-line).
fn shell_list(script: &str, name: &str) -> Vec<String> {
    let start = script
        .find(&format!("\n{name}=\""))
        .unwrap_or_else(|| panic!("run-ptest has no {name}"))
        + name.len()
        + 3;
    let end = script[start..].find('"').unwrap() + start;
    script[start..end]
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Whether tests/<file>.rs has a `#[test]` function called `name`.
fn has_test(file: &str, name: &str) -> bool {
    let text = read(&root().join("tests").join(format!("{file}.rs")));
    let lines: Vec<&str> = text.lines().collect();
    lines.iter().enumerate().any(|(i, l)| {
        l.trim_start().starts_with(&format!("fn {name}("))
            && lines[..i]
                .iter()
                .rev()
                .take_while(|p| {
                    let p = p.trim_start();
                    p.starts_with("#[") || p.starts_with("//")
                })
                .any(|p| p.trim_start() == "#[test]")
    })
}

#[test]
fn ptest_skip_list_names_tests_that_exist_and_covers_the_source_readers() {
    let script = read(&recipe_dir().join("files/run-ptest"));
    let binaries = shell_list(&script, "SKIP_BINARIES");
    let tests = shell_list(&script, "SKIP_TESTS");
    assert!(!binaries.is_empty() && !tests.is_empty());
    for b in &binaries {
        assert!(
            root().join("tests").join(format!("{b}.rs")).exists(),
            "run-ptest skips {b}, but there is no tests/{b}.rs"
        );
    }
    for t in &tests {
        let (file, name) = t.split_once(':').expect("BINARY:TEST");
        assert!(
            has_test(file, name),
            "run-ptest skips {t}, but tests/{file}.rs has no #[test] fn {name}"
        );
    }
    // Every test file that reads the source tree at run time is on a list.
    let mut readers = Vec::new();
    for entry in std::fs::read_dir(root().join("tests")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = read(&path);
        if text.contains("env!(\"CARGO_MANIFEST_DIR\")") || text.contains("RtspServer::start") {
            readers.push(path.file_stem().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(readers.contains(&"yocto_layer".to_owned()), "{readers:?}");
    for r in &readers {
        assert!(
            binaries.contains(r) || tests.iter().any(|t| t.starts_with(&format!("{r}:"))),
            "tests/{r}.rs reads the source tree: name it (or its tests) in run-ptest"
        );
    }
}

/// run-ptest on stand-in test binaries: skipped binaries are not run, single skips reach
/// only their binary, results are reported per binary, a failure fails the run, and the
/// loop ptest-cargo appends is never reached.
#[test]
fn run_ptest_skips_by_name_and_reports_each_binary() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("quoll-ptest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("calls.log");
    // One stand-in, linked under each test binary's name: it logs how it was called and
    // fails when its name says so.
    let stand_in = dir.join("stand-in.sh");
    std::fs::write(
        &stand_in,
        format!(
            "#!/bin/sh\necho \"$(basename \"$0\") $*\" >> {}\ncase \"$0\" in *failing*) exit 101 ;; esac\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ptest = dir.join("ptest");
    std::fs::create_dir_all(&ptest).unwrap();
    let mut runner = read(&recipe_dir().join("files/run-ptest"));
    // What ptest-cargo appends to an existing run-ptest.
    runner.push_str(
        "\necho \"\"\necho \"## starting to run rust tests ##\"\nif ! /nonexistent/x ; then rc=1; fi\nexit $rc\n",
    );
    std::fs::write(ptest.join("run-ptest"), runner).unwrap();
    std::fs::set_permissions(
        ptest.join("run-ptest"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let hash = "0123456789abcdef";
    for name in [
        "yocto_layer",
        "bridge_rtsp",
        "event_catalog",
        "srt_flow",
        "udp_flow",
        "quoll",
    ] {
        std::os::unix::fs::symlink(&stand_in, ptest.join(format!("{name}-{hash}"))).unwrap();
    }
    let run = || {
        let _ = std::fs::remove_file(&log);
        let out = Command::new("sh")
            .arg(ptest.join("run-ptest"))
            .env("QUOLL_BIN", "/usr/bin/quoll")
            .output()
            .unwrap();
        let calls = std::fs::read_to_string(&log).unwrap_or_default();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            calls,
        )
    };
    let (code, out, calls) = run();
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("starting to run rust tests"), "{out}");
    for skipped in ["yocto_layer", "bridge_rtsp"] {
        assert!(out.contains(&format!("SKIP: {skipped}")), "{out}");
        assert!(!calls.contains(skipped), "{skipped} ran: {calls}");
    }
    let call = |name: &str| {
        calls
            .lines()
            .find(|l| l.starts_with(&format!("{name}-{hash}")))
            .unwrap_or_else(|| panic!("{name} did not run: {calls}"))
            .to_owned()
    };
    assert_eq!(
        call("event_catalog"),
        format!(
            "event_catalog-{hash} --exact --skip catalog_matches_the_seed_tables_row_for_row \
             --skip docs_list_every_event_of_the_catalog"
        )
    );
    assert_eq!(
        call("srt_flow"),
        format!(
            "srt_flow-{hash} --exact --skip srt_live_transmit_caller_into_quoll_listener_byte_exact"
        )
    );
    assert_eq!(call("udp_flow"), format!("udp_flow-{hash} --exact"));
    assert_eq!(call("quoll"), format!("quoll-{hash} --exact"));
    for passed in ["event_catalog", "srt_flow", "udp_flow", "quoll"] {
        assert!(out.contains(&format!("PASS: {passed}\n")), "{out}");
    }

    // One failing binary fails the run, the others still run.
    std::os::unix::fs::symlink(&stand_in, ptest.join(format!("failing-{hash}"))).unwrap();
    let (code, out, calls) = run();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAIL: failing"), "{out}");
    assert!(calls.contains(&format!("udp_flow-{hash}")), "{calls}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Every repository path docs/appliance.md names (in backticks, or in its layer tree)
/// exists.
#[test]
fn appliance_doc_names_only_files_that_exist() {
    let doc = read(&root().join("docs/appliance.md"));
    let roots = [
        "src/", "tests/", "scripts/", "board/", "yocto/", "docs/", "build.rs",
    ];
    let mut checked = 0;
    for (i, chunk) in doc.split('`').enumerate() {
        if i % 2 == 0 {
            continue; // outside backticks
        }
        let path = chunk.trim();
        if !roots.iter().any(|r| path.starts_with(r)) || path.contains(' ') {
            continue;
        }
        // `board/<board>.json` style patterns stand for every board.
        let paths: Vec<String> = if path.contains("<board>") {
            quoll::board::names()
                .map(|b| path.replace("<board>", b))
                .collect()
        } else if path.contains('*') || path.contains('<') {
            continue;
        } else {
            vec![path.to_owned()]
        };
        for p in paths {
            assert!(
                root().join(p.split(['#', ':']).next().unwrap()).exists(),
                "docs/appliance.md names {p}, which does not exist"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 10,
        "only {checked} paths found in docs/appliance.md"
    );
    // The layer tree: lines of the fenced block after "## The Yocto layer".
    let section = doc
        .split("## The Yocto layer")
        .nth(1)
        .expect("a Yocto layer section");
    let block = section.split("```").nth(1).expect("the layer tree block");
    // Indentation nests an entry in the directory above it.
    let mut parents: Vec<(usize, PathBuf)> = Vec::new();
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let indent = line.len() - line.trim_start().len();
        let entry = line.split_whitespace().next().unwrap();
        while parents.last().is_some_and(|(i, _)| *i >= indent) {
            parents.pop();
        }
        let full = match parents.last() {
            Some((_, dir)) => dir.join(entry),
            None => PathBuf::from(entry),
        };
        if entry.ends_with('/') {
            parents.push((indent, full.clone()));
        }
        let exists = quoll::board::names().all(|b| {
            layer()
                .join(full.to_string_lossy().replace("<board>", b))
                .exists()
        });
        assert!(
            exists,
            "the layer tree in docs/appliance.md names {}",
            full.display()
        );
    }
}
