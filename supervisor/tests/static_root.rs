//! The static (musl) build, as it is copied into worker images: it has no ELF interpreter and runs
//! in a root that holds nothing but itself (a `FROM scratch` image has no libc, no /proc, no /tmp).
//!
//! Needs the static build first: `tests/static-build.sh` (tests/run.sh runs it). `QSUPERVISOR_STATIC`
//! may point at another static binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{scratch, wait_for, BIN};

const T: Duration = Duration::from_secs(30);

fn static_binary() -> PathBuf {
    let path = std::env::var_os("QSUPERVISOR_STATIC")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // BIN is <target>/debug/qsupervisor; the musl build sits beside it per target triple.
            let target = Path::new(BIN)
                .ancestors()
                .nth(2)
                .expect("the target directory");
            target.join("x86_64-unknown-linux-musl/debug/qsupervisor")
        });
    assert!(
        path.is_file(),
        "{} is missing: build it with tests/static-build.sh",
        path.display()
    );
    path
}

/// Whether an ELF executable names a program interpreter (PT_INTERP): every dynamically linked
/// executable does; a static one does not.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let ph_offset = u64::from_le_bytes(elf[0x20..0x28].try_into().expect("e_phoff")) as usize;
    let (ph_size, ph_count) = (u16_at(0x36), u16_at(0x38));
    (0..ph_count).any(|i| {
        let at = ph_offset + i * ph_size;
        u32::from_le_bytes(elf[at..at + 4].try_into().expect("p_type")) == PT_INTERP
    })
}

#[test]
fn the_static_build_has_no_interpreter_and_the_default_build_has_one() {
    let default = std::fs::read(BIN).expect("the default build");
    assert!(
        has_interpreter(&default),
        "the check must see the glibc build's interpreter"
    );
    let static_ = std::fs::read(static_binary()).expect("the static build");
    assert!(
        !has_interpreter(&static_),
        "the musl build needs an ELF interpreter, so it is not static"
    );
}

/// A root directory holding only the binary, as `/qsupervisor`. Copied by `cp`, not by this
/// process: a file this process writes can be inherited open for writing by a child that another
/// test thread forks at that moment, and exec then fails with ETXTBSY ("Text file busy").
fn empty_root(name: &str) -> PathBuf {
    let root = scratch(name);
    let status = Command::new("cp")
        .arg(static_binary())
        .arg(root.join("qsupervisor"))
        .status()
        .expect("cp");
    assert!(status.success(), "copying the binary: {status}");
    root
}

/// Runs `args` chrooted into `root` (no /proc, no /dev, no libraries), with a deadline.
fn in_root(root: &Path, args: &[&str]) -> Output {
    let mut child = Command::new("/usr/sbin/chroot")
        .arg(root)
        .args(args)
        .env_clear()
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chroot (coreutils; the tests run as root)");
    wait_for(T, "the chrooted qsupervisor to exit", || {
        child.try_wait().expect("try_wait").map(|_| ())
    });
    child.wait_with_output().expect("its output")
}

#[test]
fn runs_in_a_root_holding_only_itself() {
    let root = empty_root("static-version");
    let out = in_root(&root, &["/qsupervisor", "--version"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("qsupervisor "),
        "{out:?}"
    );
}

/// Supervising a worker there: the outer supervisor runs an inner one whose command does not exist;
/// the inner exits 127 (as a shell does) and the outer passes that code on. Without /proc neither
/// panics, and neither reports made-up usage (zeros would shrink the requests the operator sizes).
#[test]
fn supervises_a_worker_in_that_root_and_passes_its_exit_code_on() {
    let root = empty_root("static-worker");
    let out = in_root(
        &root,
        &[
            "/qsupervisor",
            "--",
            "/qsupervisor",
            "--",
            "/no/such/worker",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(127), "stderr:\n{stderr}");
    assert!(stderr.contains("/no/such/worker"), "stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "stderr:\n{stderr}");
    assert!(
        stderr.contains("/proc is not mounted: usage cannot be measured"),
        "stderr:\n{stderr}"
    );
    assert!(!stderr.contains("usage="), "stderr:\n{stderr}");
}
