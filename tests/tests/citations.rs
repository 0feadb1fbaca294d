//! Every claim about Azure behavior cites a public source (a Microsoft Learn URL, an SDK file on
//! GitHub at a tag, an RFC) or a test in this repository, never a document outside the repository
//! (issue 16, point 8; docs/sources.md lists the sources). This test reads the repository's source
//! and documentation files and fails on a citation of such a document.

use std::path::{Path, PathBuf};

/// File types that hold code comments or documentation.
const EXTENSIONS: &[&str] = &[
    "rs", "md", "proto", "py", "yaml", "yml", "sh", "toml", "lua", "json",
];

/// Folders that are not the repository's own text (build output, dependencies, caches).
const SKIP_DIRS: &[&str] = &["target", ".git", ".venv", "node_modules", "__pycache__"];

/// Phrases that cite documents outside this repository (lower-case). Written in two parts so this
/// file does not match itself.
fn forbidden() -> Vec<String> {
    [
        ("reference ", "§"),
        ("reference", "/§"),
        ("../", "shared/"),
        ("the ", "brief"),
        ("DEVELOPERS", ".md"),
        ("find_", "string"),
        ("seed ", "00"),
    ]
    .iter()
    .map(|(a, b)| format!("{a}{b}").to_lowercase())
    .collect()
}

/// A `§` outside an RFC citation ("RFC 6749 §5.2") points into a document nobody can open.
fn bad_section_sign(line: &str) -> bool {
    line.contains('§') && !line.contains("RFC ")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            // Hidden folders (virtualenvs, VCS data) and virtualenvs are not the repository's text;
            // `.ci` is.
            let hidden = name.starts_with('.') && name != ".ci";
            if !SKIP_DIRS.contains(&name.as_str()) && !hidden && !p.join("pyvenv.cfg").exists() {
                files(&p, out);
            }
        } else if p
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| EXTENSIONS.contains(&x))
            || name == "run"
        {
            out.push(p);
        }
    }
}

#[test]
fn no_comment_or_doc_cites_a_document_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut all = Vec::new();
    files(&root, &mut all);
    assert!(
        all.len() > 100,
        "read only {} files under {}",
        all.len(),
        root.display()
    );
    let forbidden = forbidden();
    let mut found = Vec::new();
    // This file spells the phrases out in its own test below.
    for f in all
        .iter()
        .filter(|f| !f.ends_with("tests/tests/citations.rs"))
    {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            let lower = line.to_lowercase();
            if forbidden.iter().any(|p| lower.contains(p.as_str())) || bad_section_sign(line) {
                found.push(format!(
                    "{}:{}: {}",
                    f.strip_prefix(&root).unwrap_or(f).display(),
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "cite a public URL or a test in this repository instead:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_recognizes_each_kind_of_citation() {
    let forbidden = forbidden();
    for line in [
        "// see reference §4.2",
        "/// per Seed 004",
        "# as the brief says",
        "// rules in DEVELOPERS.md",
        "// ../shared/notes",
        "| find_string id 12 |",
    ] {
        let lower = line.to_lowercase();
        assert!(
            forbidden.iter().any(|p| lower.contains(p.as_str())),
            "{line}"
        );
    }
    assert!(bad_section_sign("// see §3"));
    assert!(!bad_section_sign("// RFC 6749 §5.2"));
    assert!(!forbidden
        .iter()
        .any(|p| "--seed 42, seeded generator".contains(p.as_str())));
}
