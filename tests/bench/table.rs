//! Cells of the result tables: a figure with its ratio to the baseline row.

/// `value` with `decimals` decimals and `unit`, then its ratio to `base`: `123.4us (1.05x)`.
pub fn relative(value: f64, base: f64, decimals: usize, unit: &str) -> String {
    format!("{value:.decimals$}{unit} ({:.2}x)", value / base)
}
