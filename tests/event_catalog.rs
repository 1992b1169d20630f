//! The event catalog is held against the seed's tables (`shared/seeds/events-and-alarms.txt`):
//! every row has exactly one constructor with the same severity, category and message text,
//! and nothing else is in the seed's categories.

use std::collections::BTreeMap;

use quoll::events::catalog::{Category, Event, Severity, templates};

type Row = (Severity, Category, String);

fn seed_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/seeds/events-and-alarms.txt")
}

/// The rows of the seed's "Event Reference" tables, with the category of the heading above
/// them and typographic quotes made ASCII.
fn seed_rows(text: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut category = None;
    let mut in_reference = false;
    for line in text.lines() {
        // Headings are flattened as `Section titled "<previous>"<next heading or table>`.
        let line = match line.strip_prefix("Section titled ") {
            Some(rest) => rest.split_once('\u{201D}').map_or(rest, |(_, next)| next),
            None => line,
        };
        if line.starts_with("Event Reference") {
            in_reference = true;
            continue;
        }
        if line.starts_with("Manager-Generated Events") {
            break;
        }
        if !in_reference {
            continue;
        }
        if let Some(rest) = line.strip_prefix("| ") {
            let cols: Vec<&str> = rest.split(" | ").collect();
            let Some(sev) = Severity::parse(cols[0]) else {
                continue; // header row
            };
            let msg = cols[1].replace(['\u{2018}', '\u{2019}'], "'");
            rows.push((sev, category.expect("row before any category heading"), msg));
        } else if line.ends_with(')') {
            let name = line.rsplit_once('(').map(|(_, c)| c.trim_end_matches(')'));
            if let Some(c) = name.and_then(Category::parse) {
                category = Some(c);
            }
        }
    }
    rows
}

/// Quoll's own events in a seed category (the spec's warning for an insecure tunnel).
fn own_in_seed_category(e: &Event) -> bool {
    *e == Event::tunnel_tls_insecure("{tunnel_id}", "{name}")
}

fn catalog_rows() -> Vec<Row> {
    templates()
        .into_iter()
        .filter(|e| e.category.is_seed() && !own_in_seed_category(e))
        .map(|e| (e.severity, e.category, e.message))
        .collect()
}

#[test]
fn catalog_matches_the_seed_tables_row_for_row() {
    let path = seed_path();
    let Ok(text) = std::fs::read_to_string(&path) else {
        // CI and every session have shared/ beside the checkout; a bare clone elsewhere
        // still runs the count test below.
        eprintln!("skipping: {} not found", path.display());
        return;
    };
    let mut seed = seed_rows(&text);
    let mut ours = catalog_rows();
    seed.sort();
    ours.sort();
    assert_eq!(seed.len(), 47, "the seed's tables have 47 rows");
    let missing: Vec<_> = seed.iter().filter(|r| !ours.contains(r)).collect();
    let extra: Vec<_> = ours.iter().filter(|r| !seed.contains(r)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "seed rows without a constructor: {missing:#?}\nconstructors not in the seed: {extra:#?}"
    );
    assert_eq!(seed, ours);
}

#[test]
fn catalog_counts_are_the_seed_tables_counts() {
    let rows = catalog_rows();
    assert_eq!(rows.len(), 47);
    let mut by_cat = BTreeMap::new();
    let mut by_sev = BTreeMap::new();
    for (sev, cat, _) in &rows {
        *by_cat.entry(cat.as_str()).or_insert(0) += 1;
        *by_sev.entry(sev.as_str()).or_insert(0) += 1;
    }
    let cats: Vec<_> = by_cat.into_iter().collect();
    assert_eq!(
        cats,
        [
            ("config", 2),
            ("flow", 7),
            ("hls", 2),
            ("manager", 3),
            ("redundancy", 3),
            ("rtmp", 3),
            ("rtsp", 2),
            ("srt", 9),
            ("tunnel", 8),
            ("webrtc", 8),
        ]
    );
    // The seed's "By Severity" summary says 20 / 17 / 10; its own tables give these.
    let sevs: Vec<_> = by_sev.into_iter().collect();
    assert_eq!(sevs, [("critical", 10), ("info", 21), ("warning", 16)]);
}

#[test]
fn messages_are_ascii_and_serialize_as_the_manager_reads_them() {
    for e in templates() {
        assert!(e.message.is_ascii(), "{:?}", e.message);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["severity"], e.severity.as_str());
        assert_eq!(v["category"], e.category.as_str());
        assert_eq!(v["message"], e.message.as_str());
        assert_eq!(Severity::parse(e.severity.as_str()), Some(e.severity));
        assert_eq!(Category::parse(e.category.as_str()), Some(e.category));
    }
}

/// The catalog section of docs/events.md, generated from the constructors.
fn catalog_markdown() -> String {
    let mut out = String::from(
        "<!-- catalog:begin (generated: QUOLL_UPDATE_DOCS=1 cargo test --test event_catalog) -->\n",
    );
    for cat in Category::ALL {
        let rows: Vec<_> = templates()
            .into_iter()
            .filter(|e| e.category == cat)
            .collect();
        let title = if cat.is_seed() {
            format!("\n### `{}` ({} events)\n\n", cat.as_str(), rows.len())
        } else {
            format!(
                "\n### `{}` ({} events, Quoll's own: not in the seed)\n\n",
                cat.as_str(),
                rows.len()
            )
        };
        out.push_str(&title);
        out.push_str("| severity | message |\n| --- | --- |\n");
        for e in rows {
            out.push_str(&format!("| {} | `{}` |\n", e.severity.as_str(), e.message));
        }
    }
    out.push_str("<!-- catalog:end -->\n");
    out
}

#[test]
fn docs_list_every_event_of_the_catalog() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/events.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let begin = doc
        .find("<!-- catalog:begin")
        .expect("catalog:begin marker in docs/events.md");
    let end_marker = "<!-- catalog:end -->\n";
    let end = doc.find(end_marker).expect("catalog:end marker") + end_marker.len();
    let expected = catalog_markdown();
    if std::env::var_os("QUOLL_UPDATE_DOCS").is_some_and(|v| v == "1") {
        let mut new = doc.clone();
        new.replace_range(begin..end, &expected);
        std::fs::write(&path, new).unwrap();
        return;
    }
    assert!(
        doc[begin..end] == expected,
        "docs/events.md's catalog is out of date: QUOLL_UPDATE_DOCS=1 cargo test --test event_catalog"
    );
}
