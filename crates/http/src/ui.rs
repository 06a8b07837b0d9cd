//! The web page at `GET /`: self-contained HTML, CSS and JavaScript; it loads nothing else.

/// ui/index.html
pub const INDEX_HTML: &str = include_str!("ui/index.html");
