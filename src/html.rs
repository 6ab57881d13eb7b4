//! Helpers the HTML pages share: the planner's page (`plan --html`), the policy report's
//! (`policy report -o html`) and the usage page (`usage -o html`). Escaping, and the start and end
//! of a page in the planner report's look (the style the planner's and the report's pages have in
//! common). Every page is self-contained: inline CSS and SVG, no scripts, no external assets.
//!
//! Imports: nothing of the crate; the pages import this.

/// Text as HTML: safe in element content and in double-quoted attribute values.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The CSS of the planner report's look, one rule a line (braces as CSS writes them).
const STYLE: &str = "\
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #1d2329; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #dde1e5; padding: 0.35rem 0.5rem; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.big { font-size: 1.6rem; font-weight: 600; }
.totals td { font-variant-numeric: tabular-nums; }
";

/// A page in the planner report's look, up to and including `<body>`: `title` is HTML (escape what it
/// quotes), `extra_style` CSS lines (each ending in a newline) after the shared ones.
pub fn page_start(title: &str, extra_style: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n<style>\n{STYLE}{extra_style}</style>\n</head>\n<body>\n"
    )
}

/// What closes a page [`page_start`] opened.
pub const PAGE_END: &str = "</body>\n</html>\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esc_escapes_markup_and_quotes() {
        assert_eq!(esc(r#"a<b>&"c""#), "a&lt;b&gt;&amp;&quot;c&quot;");
    }
}
