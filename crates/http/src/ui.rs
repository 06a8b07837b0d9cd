//! The web pages: self-contained HTML, CSS and JavaScript; they load nothing else.

/// `GET /`: classify texts (ui/index.html).
pub const INDEX_HTML: &str = include_str!("ui/index.html");

/// `GET /cluster`: the live cluster page over `GET /v1/cluster` (ui/cluster.html).
pub const CLUSTER_HTML: &str = include_str!("ui/cluster.html");
