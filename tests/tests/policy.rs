//! Repository policy, checked as a test: `unsafe` code appears only in
//! `shm-layout/src/mapping.rs` (the table's raw mapping) and in the `sys.rs` modules (system
//! calls), as ARCHITECTURE.md and the style guide say. Comments, doc text and string literals
//! that mention the word do not count; `forbid(unsafe_code)`-style lint names do not either.

use std::path::{Path, PathBuf};

/// Where `unsafe` code may stand (paths relative to the repository root).
fn allowed(rel: &str) -> bool {
    rel == "shm-layout/src/mapping.rs" || rel.ends_with("/sys.rs")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Every `.rs` file below `dir`, skipping build output, VCS data and fuzz corpora.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(
                name.as_str(),
                "target" | ".git" | "corpus" | "artifacts" | "node_modules"
            ) {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// The code part of a line: without a `//` comment and without the contents of string
/// literals (a rough lexer: enough for this repository's style, which has no block comments
/// around code and no raw strings containing quotes).
fn code_part(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_str = false;
                    out.push('"');
                }
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push('"');
            }
            '/' if chars.peek() == Some(&'/') => break,
            _ => out.push(c),
        }
    }
    out
}

/// Whether the line holds the keyword `unsafe` in code (not `unsafe_code`, `unsafe_op_in_…`).
fn has_unsafe_code(line: &str) -> bool {
    let code = code_part(line);
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(i) = code[from..].find("unsafe") {
        let at = from + i;
        let before = at.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(at + "unsafe".len()).copied();
        let ident = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ident(before) && !ident(after) {
            return true;
        }
        from = at + "unsafe".len();
    }
    false
}

#[test]
fn the_detector_tells_code_from_text() {
    assert!(has_unsafe_code("    unsafe { libc::close(fd) };"));
    assert!(has_unsafe_code("pub unsafe fn f() {}"));
    assert!(has_unsafe_code("let x = unsafe { y };  // SAFETY: …"));
    assert!(!has_unsafe_code("// SAFETY: this is unsafe { }"));
    assert!(!has_unsafe_code("//! its only `unsafe`"));
    assert!(!has_unsafe_code("#![forbid(unsafe_code)]"));
    assert!(!has_unsafe_code("unsafe_op_in_unsafe_fn = \"deny\""));
    assert!(!has_unsafe_code("    eprintln!(\"table is unsafe: {e}\");"));
    assert!(!has_unsafe_code("    let s = \"a \\\" unsafe \\\" b\";"));
}

#[test]
fn unsafe_code_only_in_the_mapping_and_the_sys_modules() {
    let root = repo_root();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(
        files.len() > 50,
        "found only {} .rs files under {}: the walk is broken",
        files.len(),
        root.display()
    );
    let mut violations = Vec::new();
    let mut allowed_hits = 0;
    for path in &files {
        let rel = path
            .strip_prefix(&root)
            .expect("below the root")
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if has_unsafe_code(line) {
                if allowed(&rel) {
                    allowed_hits += 1;
                } else {
                    violations.push(format!("{rel}:{}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        allowed_hits > 0,
        "no `unsafe` found even in the allowed files: the detector is broken"
    );
    assert!(
        violations.is_empty(),
        "`unsafe` outside shm-layout/src/mapping.rs and the sys.rs modules:\n{}",
        violations.join("\n")
    );
}

/// Where the supervisor's library lives, and the part of it allowed to name the worker crate:
/// only the `prodhcpd` binary links the worker (it runs `prodhcpd worker`); the daemon talks to
/// workers through the launch contract in `prodhcp_proto::launch`.
const SUPERVISOR_SRC: &str = "supervisor/src";
const SUPERVISOR_BIN: &str = "supervisor/src/bin";

#[test]
fn the_supervisor_library_does_not_name_the_worker_crate() {
    let root = repo_root();
    let mut files = Vec::new();
    rust_files(&root.join(SUPERVISOR_SRC), &mut files);
    assert!(
        files.len() > 5,
        "found only {} .rs files under {SUPERVISOR_SRC}: the walk is broken",
        files.len()
    );
    let mut violations = Vec::new();
    let mut binary_names_it = false;
    for path in &files {
        let rel = path
            .strip_prefix(&root)
            .expect("below the root")
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(path).expect("readable source file");
        let in_binary = rel.starts_with(&format!("{SUPERVISOR_BIN}/"));
        for (n, line) in text.lines().enumerate() {
            if line.contains("prodhcp_worker") {
                if in_binary {
                    binary_names_it = true;
                } else {
                    violations.push(format!("{rel}:{}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        binary_names_it,
        "{SUPERVISOR_BIN} does not name prodhcp_worker: the search is broken (prodhcpd runs the worker)"
    );
    assert!(
        violations.is_empty(),
        "the supervisor library names the worker crate (only {SUPERVISOR_BIN}/ may):\n{}",
        violations.join("\n")
    );
}
