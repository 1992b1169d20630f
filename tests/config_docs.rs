//! Every JSON example in docs/configuration.md must be a valid config, so the reference
//! cannot drift from the code.

#[test]
fn documented_examples_validate() {
    let doc = include_str!("../docs/configuration.md");
    let mut found = 0;
    for block in doc.split("```json\n").skip(1) {
        let json = block.split("```").next().unwrap();
        if let Err(errors) = quoll::config::parse(json) {
            let e: Vec<String> = errors.iter().map(ToString::to_string).collect();
            panic!("example {found} in docs/configuration.md is invalid: {e:#?}\n{json}");
        }
        found += 1;
    }
    assert_eq!(found, 6, "expected six JSON examples");
    // The first example is the built-in default, verbatim.
    let first = doc
        .split("\n## Example\n")
        .nth(1)
        .expect("an Example section")
        .split("```json\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    assert_eq!(first, quoll::config::EMBEDDED_DEFAULT);
}
