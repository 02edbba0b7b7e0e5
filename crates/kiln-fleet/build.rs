//! Embeds kiln's user documentation (the README and `docs/*.md`), which every agent sandbox
//! can read at `/.kiln/docs/kiln/`.

use std::fmt::Write;
use std::path::{Path, PathBuf};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let docs = root.join("docs");
    println!("cargo:rerun-if-changed={}", docs.display());
    println!(
        "cargo:rerun-if-changed={}",
        root.join("README.md").display()
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&docs)
        .map(|dir| {
            dir.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "md"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.insert(0, root.join("README.md"));
    let mut out = String::from("pub(crate) const KILN_DOCS: &[(&str, &str)] = &[\n");
    for file in files.iter().filter(|f| f.exists()) {
        let name = file.file_name().unwrap().to_string_lossy();
        let path = file.canonicalize().unwrap();
        writeln!(out, "    ({name:?}, include_str!({:?})),", path.display()).unwrap();
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("kiln_docs.rs");
    std::fs::write(dest, out).unwrap();
}
