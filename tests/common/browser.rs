//! The HTML reports (`plan --html`, `policy report -o html`) as a person sees them: rendered by a real
//! headless Chromium (Debian's `chromium`, installed by `.ci/run`).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// The DOM of the page at `html` after Chromium ran it, having checked that the page is
/// self-contained (no external assets, no scripts) and logged no console error.
pub fn rendered_dom(html: &Path) -> String {
    let page = std::fs::read_to_string(html).unwrap();
    assert!(
        !page.contains("http://") && !page.contains("https://") && !page.contains("<script"),
        "self-contained, no external assets"
    );
    let Some(browser) = chromium() else {
        panic!(
            "no headless Chromium found: install Debian's chromium (`apt-get install chromium`), as .ci/run does"
        );
    };
    let profile = tempfile::tempdir().unwrap();
    let rendered = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&rendered.stderr);
    assert!(rendered.status.success(), "{stderr}");
    assert!(
        !stderr
            .lines()
            .any(|l| l.contains("CONSOLE") && (l.contains("ERROR") || l.contains("Uncaught"))),
        "console errors: {stderr}"
    );
    String::from_utf8_lossy(&rendered.stdout).into_owned()
}

/// The text of the element with this `id` in a rendered DOM.
pub fn cell(dom: &str, id: &str) -> String {
    let start = dom
        .find(&format!("id=\"{id}\">"))
        .unwrap_or_else(|| panic!("#{id} not rendered"))
        + id.len()
        + 6;
    dom[start..].split('<').next().unwrap_or("").to_string()
}
