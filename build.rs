//! Records the git revision for `health` (QUOLL_GIT_REV overrides, e.g. from a Yocto
//! recipe building a tarball; "unknown" when neither is available).
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=QUOLL_GIT_REV");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let rev = std::env::var("QUOLL_GIT_REV")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=QUOLL_GIT_REV={rev}");
}
