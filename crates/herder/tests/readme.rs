//! The README's quickstart is the crate docs' quickstart (which rustdoc compiles and runs): this
//! test keeps the two identical.

// `README.md` in the crate is a link to the workspace's README (the crates.io page), so that
// this test also compiles in the packaged crate, where cargo puts the README's content.
const README: &str = include_str!("../README.md");
const LIB: &str = include_str!("../src/lib.rs");

/// The first fenced code block after `heading`, without its fences.
fn block_after(text: &str, heading: &str) -> Vec<String> {
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?} section"));
    text[start..]
        .lines()
        .skip_while(|line| !line.starts_with("```"))
        .skip(1)
        .take_while(|line| !line.starts_with("```"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_readme_quickstart_is_the_crate_docs_quickstart() {
    let lib: String = LIB
        .lines()
        .filter_map(|line| line.strip_prefix("//!"))
        .map(|line| line.strip_prefix(' ').unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n");
    let from_docs = block_after(&lib, "# Quickstart");
    let from_readme = block_after(README, "## Quickstart");
    assert!(
        from_docs.len() > 10,
        "quickstart not found in the crate docs"
    );
    assert_eq!(
        from_readme, from_docs,
        "README.md and src/lib.rs quickstarts differ"
    );
}
