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

/// The README's first-run ffmpeg command puts a keyframe every 2 s (`-g` = 2 × the frame
/// rate), so `ffplay` on the output shows a picture at once instead of after x264's
/// default 250-frame GOP (10 s).
#[test]
fn readme_test_stream_has_a_two_second_gop() {
    let readme = include_str!("../README.md");
    let cmd = readme
        .split("```sh\n")
        .find(|b| b.starts_with("ffmpeg -re"))
        .expect("the README's ffmpeg example")
        .split("```")
        .next()
        .unwrap()
        .replace("\\\n", " ");
    let after = |flag: &str| -> String {
        let mut words = cmd.split_whitespace();
        words.find(|w| *w == flag);
        words.next().unwrap_or_default().to_owned()
    };
    let rate: u32 = cmd
        .split("rate=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|r| r.parse().ok())
        .expect("a frame rate");
    assert_eq!(after("-g").parse::<u32>().ok(), Some(2 * rate), "{cmd}");
}
