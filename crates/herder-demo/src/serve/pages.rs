//! The HTML served, kept in files of their own next to this one.

/// `/`: the live chart of `/stats`, and buttons that send queries.
pub(super) const DASHBOARD: &str = include_str!("dashboard.html");
